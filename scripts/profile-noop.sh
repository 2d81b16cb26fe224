#!/usr/bin/env bash
# Where the CPU of no-op tests goes (docs/BENCHMARKS.md, "Where the time goes"):
# runs N `true` tests through a fleet of one worker × 4 slots (process
# executor, release binaries, a waiting producer) and prints the CPU seconds
# of RabbitMQ, the aggregator, the worker, the tests themselves and the
# producer, per test. With --perf it also records `perf record -e cpu-clock`
# (software events: this VM has no hardware counters) over the run and prints
# the share of each command.
#
#   scripts/profile-noop.sh [--perf] [N]      (default N = 20000)
#
# Expects scripts/setup.sh and a release build (`scripts/bench.sh` does both).
# Extra worker settings go through the environment, e.g.
# TESTFLEET_WORKER__PREFETCH_EXTRA=4.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

perf=0
if [ "${1:-}" = --perf ]; then perf=1; shift; fi
n=${1:-20000}
bin=$root/target/release
work=$root/target/profile-noop
rm -rf "$work"
mkdir -p "$work"
source scripts/lib/fleet.sh

seq -f 'n%07g' "$n" >"$work/ids.txt"
fleet_start profile 1 4 --executors process
until grep -q "aggregator ready" "$work/aggregator.log" 2>/dev/null &&
  grep -q "connected to the broker" "$work/worker-1.log" 2>/dev/null; do sleep 0.1; done
sleep 0.5

# CPU ticks of a process (self) and of its reaped children.
own() { awk '{print $14 + $15}' "/proc/$1/stat"; }
children() { awk '{print $16 + $17}' "/proc/$1/stat"; }
beam=$(pgrep -f beam.smp | head -1)
aggregator=${fleet_pids[0]} worker=${fleet_pids[1]}
b0=$(own "$beam") a0=$(own "$aggregator") w0=$(own "$worker") c0=$(children "$worker")
if [ "$perf" = 1 ]; then
  perf record -q -F 999 -e cpu-clock -a -o "$work/perf.data" -- sleep 3600 >/dev/null 2>&1 &
  recorder=$!
fi
started=$(date +%s%3N)
/usr/bin/time -f "%U %S" -o "$work/producer.time" "$bin/testfleet-producer" --order arrival \
  --report-dir "$work/reports" --tests "$work/ids.txt" --executor process --timeout 60 \
  --wait -- true '{id}' >"$work/producer.out" 2>"$work/producer.log" || true
ended=$(date +%s%3N)
[ "$perf" = 0 ] || { kill -INT "$recorder"; wait "$recorder" || true; }
b1=$(own "$beam") a1=$(own "$aggregator") w1=$(own "$worker") c1=$(children "$worker")
fleet_stop

ticks=$(getconf CLK_TCK)
per_test() { python3 -c "import sys; print(f'{float(sys.argv[1]) * 1000 / int(sys.argv[2]):.3f}')" "$1" "$n"; }
producer=$(awk '{print $1 + $2}' "$work/producer.time")
printf '%s no-op tests in %.1f s: %s tests/s\n' "$n" "$(python3 -c "print(($ended - $started) / 1000)")" \
  "$(python3 -c "print(round($n * 1000 / ($ended - $started)))")"
printf '%-22s %10s %14s\n' "process" "CPU s" "CPU ms / test"
for row in "rabbitmq:$((b1 - b0))" "aggregator:$((a1 - a0))" "worker:$((w1 - w0))" "tests (true):$((c1 - c0))"; do
  name=${row%%:*}
  value=$(python3 -c "print(f'{${row##*:} / $ticks:.2f}')")
  printf '%-22s %10s %14s\n' "$name" "$value" "$(per_test "$value")"
done
printf '%-22s %10s %14s\n' "producer" "$producer" "$(per_test "$producer")"
if [ "$perf" = 1 ]; then
  echo
  perf report -i "$work/perf.data" --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
fi
