# 65 distinct traits, one over the limit of 64.
for i in $(seq 1 65); do
    printf 'trigger uses_t%d {\n    on "Feature Used" when trait.t%d == 1\n}\n\n' "$i" "$i"
done >rules.rules
