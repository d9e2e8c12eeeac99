# 1020 distinct event names: with the 5 built-in events, one over the limit of 1024.
for i in $(seq 1 1020); do
    printf 'trigger on_event_%d {\n    on "Event %d"\n}\n\n' "$i" "$i"
done >rules.rules
