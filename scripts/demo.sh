#!/usr/bin/env bash
# The main job: makes the machine ready, builds testfleet, starts an aggregator and
# three workers, runs the sample suite in examples/ through them, and prints the
# verdict and where the reports are. Everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/setup.sh
cargo build --quiet --workspace --bins
bin=$root/target/debug

work=$root/target/demo
rm -rf "$work"; mkdir -p "$work"
# An aggregator and three workers under a queue prefix of their own, so the demo
# never meets another fleet's jobs; stopped when the script exits.
source scripts/lib/fleet.sh
fleet_start demo 3 2

echo "== running examples/ ($(wc -l <examples/tests.txt) tests) on 3 workers × 2 slots"
started=$(date +%s%N)
set +e
"$bin/testfleet-producer" --config examples/testfleet.toml --tests examples/tests.txt \
  --wait --report-dir "$work/reports" 2>"$work/producer.log"
code=$?
set -e
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
echo "== sample run took $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))s; logs in $work"

# The sample suite holds a failing and a timing-out test on purpose: exit code 1
# (tests failed) is the verdict it must reach.
if [ "$code" -eq 1 ]; then
  echo "== verdict as expected: the examples' failing and timed-out tests fail the run (exit 1)"
  exit 0
fi
echo "== unexpected exit code $code (expected 1); see $work/*.log" >&2
exit 1
