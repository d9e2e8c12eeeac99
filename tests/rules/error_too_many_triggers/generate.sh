# 1025 triggers, one over the limit.
for i in $(seq 1 1025); do
    printf 'trigger t%06d {\n    on "Feature Used"\n}\n\n' "$i"
done >rules.rules
