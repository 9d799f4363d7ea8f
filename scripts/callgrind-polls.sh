#!/usr/bin/env bash
# Counts the instructions a server spends waking held long polls, with
# callgrind: repeatable for the same binary and inputs, whatever else the
# machine is doing, where wall-clock figures on a shared machine are not.
#
#   scripts/callgrind-polls.sh [SERVER] [COUNT]
#
# SERVER: the discovery binary (default target/release/discovery; build
# with RUSTFLAGS="-C force-frame-pointers=yes" for readable call trees).
# COUNT: polls held (default 2000). The bench holds them on the server run
# under valgrind, pauses, and sends one change: counting is zeroed during
# the pause and the counts are dumped once every poll is answered, so the
# dump holds the wake alone (the change's commit, the answers, the closed
# connections). Needs valgrind, curl and target/release/discovery-bench.
# Prints the instructions per woken poll and where the dump is;
# `callgrind_annotate --inclusive=yes <dump>` reads it.
set -euo pipefail

cd "$(dirname "$0")/.."
SERVER=$(realpath "${1:-target/release/discovery}")
COUNT=${2:-2000}
BENCH=target/release/discovery-bench
OUT=$(mktemp -d /tmp/callgrind-polls.XXXXXX)

# The bench starts the server by path: a wrapper runs it under callgrind,
# as a child, so that when the bench stops the wrapper the server stays
# for the dump.
cat > "$OUT/server" <<EOT
#!/bin/sh
valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind.%p $SERVER "\$@"
EOT
chmod +x "$OUT/server"

"$BENCH" --server "$OUT/server" polls --count "$COUNT" --pause 6 > "$OUT/bench.log" 2>&1 &
bench=$!
until grep -aq "pausing" "$OUT/bench.log"; do
    kill -0 $bench 2>/dev/null || { cat "$OUT/bench.log"; exit 1; }
    sleep 0.2
done
pid=$(pgrep -f "valgrind.*$OUT/callgrind" | head -1)
port=$(ps -o args= -p "$pid" | sed 's/.*--listen 127.0.0.1:\([0-9]*\).*/\1/')
# valgrind takes a command when the program runs: an idle server is
# poked with one cheap request until the counters are zeroed.
callgrind_control -z "$pid" > /dev/null 2>&1 &
zero=$!
while kill -0 $zero 2>/dev/null; do
    curl -s -o /dev/null "http://127.0.0.1:$port/discovery/nodes" || true
    sleep 0.05
done
until grep -aq "^polls server" "$OUT/bench.log"; do sleep 0.05; done
callgrind_control -d "$pid" > /dev/null 2>&1
kill -TERM "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
wait $bench || true
grep -a "^polls server" "$OUT/bench.log"
dump=$(ls "$OUT"/callgrind.*.1)
total=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "instructions: $total for $COUNT woken polls, $((total / COUNT)) per poll ($dump)"
