# 63 distinct properties: with the built-in "feature" and "step", one over the limit of 64.
for i in $(seq 1 63); do
    printf 'trigger uses_p%d {\n    on "Feature Used" where props.p%d == 1\n}\n\n' "$i" "$i"
done >rules.rules
