# 1020 labels: with the 5 built-in events, one over the limit of 1024.
for i in $(seq 1 1020); do
    printf 'label L%04d = "Event %d"\n' "$i" "$i"
done >rules.rules
