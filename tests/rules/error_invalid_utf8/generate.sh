# Invalid UTF-8 in a rules file, written with printf.
printf 'trigger caf\xe9 {\n    on "Feature Used"\n}\n' >rules.rules
