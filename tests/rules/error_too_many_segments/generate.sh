# 65 segments, one over the limit.
for i in $(seq 1 65); do
    printf 'segment s%06d {\n    when count("Feature Used") >= %d\n}\n\n' "$i" "$i"
done >rules.rules
