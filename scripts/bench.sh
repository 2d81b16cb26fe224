#!/usr/bin/env bash
# The benchmark command of issue 5: starts what it needs (scripts/setup.sh, GNU
# parallel, a release build), runs each benchmark against the seeds' own
# tools side by side on this machine, and prints one table of figures, each with
# its target and whether it is met. Every figure is measured in this run.
#
#   scripts/bench.sh [--quick] [throughput] [warm] [overhead] [wide] [scale] [scheduling] [recovery] [fairness] [suites] [ab] [campaign]
#
# No benchmark named: all of them but campaign, which downloads from Debian's
# mirror and so runs only when named. --quick shrinks every size for a smoke test
# (seconds); its figures are not the benchmark's. See docs/BENCHMARKS.md.
# TESTFLEET_BENCH_PROFILE=debug uses target/debug (the CI smoke test does, since
# the test suite builds those); benchmarks proper use release binaries.
# TESTFLEET_BENCH_SUITES="six pygments" runs only those of the suites
# benchmark (six, go, sleep, pygments, networkx).
# TESTFLEET_BENCH_BASELINE=REV also runs the overhead and wide benchmarks on REV's
# release binaries (built in target/bench-baseline/), alternating with this
# tree's, and prints this tree's rate over REV's.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

all=(throughput warm overhead wide scale scheduling recovery fairness suites ab)
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

quick=0
selected=()
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    -h | --help) usage; exit 0 ;;
    throughput | warm | overhead | wide | scale | scheduling | recovery | fairness | suites | ab | campaign) selected+=("$arg") ;;
    *) echo "bench: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#selected[@]} -gt 0 ] || selected=("${all[@]}")

# Sizes: the issue's, or a few seconds' worth in quick mode.
if [ "$quick" = 1 ]; then
  containers=12 overhead_n=300 scale_n=1000 sched_scale=0.15 warm_reuse=5 sleep_n=100
  big_n=200 small_n=10 equal_n=40 campaign_n=12 ab_n=40 wide_n=200 wide_slots=50
else
  containers=200 overhead_n=20000 scale_n=400000 sched_scale=1 warm_reuse=50 sleep_n=1000
  big_n=2000 small_n=20 equal_n=400 campaign_n=200 ab_n=300 wide_n=5000 wide_slots=1000
fi
slots=4 # concurrency on both sides of every comparison
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker
export DOCKER

log() { printf '[bench] %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
# ratio A B [digits]: A / B
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.${3:-2}f}' if b else 'inf')" "$1" "$2"; }
# rate COUNT MS: per second
rate() { python3 -c "import sys; print(f'{int(sys.argv[1])*1000/max(1,int(sys.argv[2])):.1f}')" "$1" "$2"; }
# met VALUE OP TARGET: yes/no
met() { python3 -c "import sys,operator as o; v,op,t=sys.argv[1:]; print('yes' if {'>=':o.ge,'<=':o.le,'<':o.lt}[op](float(v),float(t)) else 'NO')" "$1" "$2" "$3"; }

rows=()
# row BENCHMARK FIGURE VALUE [OP TARGET]: a line of the table.
row() {
  local verdict=-- target=--
  if [ $# -ge 5 ]; then target="$4 $5"; verdict=$(met "$3" "$4" "$5"); fi
  rows+=("$1|$2|$3|$target|$verdict")
}

# ---------------------------------------------------------------- machine
prepare() {
  scripts/setup.sh
  local need=()
  command -v parallel >/dev/null || need+=(parallel)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  profile=${TESTFLEET_BENCH_PROFILE:-release}
  if [ "$profile" = release ]; then
    log "building release binaries"
    cargo build --quiet --release --workspace --bins
  fi
  bin=$root/target/$profile
  work=$root/target/bench
  rm -rf "$work"
  mkdir -p "$work"
  source scripts/lib/fleet.sh
  baseline_bin=
  if [ -n "${TESTFLEET_BENCH_BASELINE:-}" ]; then build_baseline "$TESTFLEET_BENCH_BASELINE"; fi
}

# build_baseline REV: REV's release binaries, built in a worktree of their own
# (kept between runs), into baseline_bin.
build_baseline() {
  local rev tree
  rev=$(git rev-parse --short "$1")
  tree=$root/target/bench-baseline/$rev
  if [ ! -d "$tree" ]; then git worktree add --detach "$tree" "$rev" >/dev/null; fi
  log "building release binaries of the baseline $rev"
  (cd "$tree" && CARGO_TARGET_DIR=$tree/target cargo build --quiet --release --workspace --bins)
  baseline_bin=$tree/target/release
  baseline_rev=$rev
}

# wait_log FILE PATTERN SECONDS: until a line of FILE matches PATTERN.
wait_log() {
  local deadline=$(($(date +%s) + $3))
  until grep -q -- "$2" "$1" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then log "no '$2' in $1 after $3 s"; return 1; fi
    sleep 0.05
  done
}

# A fleet whose every worker has joined the broker, so timing starts with a
# fleet ready rather than with processes starting.
fleet_ready() { # NAME WORKERS SLOTS [WORKER_ARGS...]
  local name=$1 workers=$2
  fleet_start "$@"
  wait_log "$work/aggregator.log" "aggregator ready" 60
  for i in $(seq "$workers"); do wait_log "$work/worker-$i.log" "connected to the broker" 60; done
  sleep 0.5 # consumers registered after the connection
  log "fleet $name ready: $workers worker(s) × $3 slots"
}

aggregator_hwm_mb() { # peak RSS of the fleet's aggregator, in MB
  awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/${fleet_pids[0]}/status"
}

# produce ARGS...: the producer, with reports under $work/reports; prints its ms.
# Jobs go in arrival order unless $order says otherwise. With --wait, the run's
# report must say every test passed ($expect=any: a mix is expected, and the
# caller checks it): a figure timed over refused or failed jobs is no figure.
produce() {
  local started code=0 out
  started=$(now_ms)
  out=$(mktemp "$work/producer-XXXXXX.out")
  "$bin/testfleet-producer" --order "${order:-arrival}" --report-dir "$work/reports" "$@" \
    >"$out" 2>>"$work/producer.log" || code=$?
  cat "$out" >>"$work/producer.out"
  if [ "$code" -gt 1 ]; then log "producer exited $code; see $work/producer.log"; return 1; fi
  local ms=$(($(now_ms) - started))
  case " $* " in
    *" --wait "*) [ "${expect:-passed}" = any ] || every_test_passed "$work/reports/$(head -1 "$out")/report.json" ;;
  esac
  echo "$ms"
}

# every_test_passed REPORT_JSON: marks the benchmark failed (bench.sh then exits
# 1 after its table) unless every test of the run passed, saying how they ended.
every_test_passed() {
  python3 - "$1" >&2 <<'EOF' || touch "$work/failed"
import collections, json, sys
try:
    report = json.load(open(sys.argv[1]))
except OSError as error:
    sys.exit(f"[bench] FAILED: no report at {sys.argv[1]}: {error}")
counts = collections.Counter(t["status"] for t in report["tests"])
if set(counts) != {"Passed"}:
    first = next(t for t in report["tests"] if t["status"] != "Passed")
    message = next((a.get("message") for a in reversed(first["attempts"]) if a.get("message")), "")
    sys.exit(f"[bench] FAILED: run {report['run_id']} was to pass every test, got {dict(counts)}; "
             f"{first['id']}: {message}")
EOF
}

last_report() { ls -t "$work"/reports/*/report.json | head -1; }

# ---------------------------------------------------------------- (a)(b) containers
# The second seed's pattern for one id: four docker CLI processes, with the
# container options testfleet uses (network as given, tmpfs /tmp, 1 GiB, 1024
# pids, no-new-privileges).
seed_one() {
  local c
  c=$("$DOCKER" run -d --label "testfleet.bench=$BENCH_TAG" --network "$BENCH_NET" --runtime "$BENCH_RUNTIME" \
    --tmpfs /tmp --memory 1g --pids-limit 1024 --security-opt no-new-privileges \
    testfleet/busybox:latest echo "$1")
  timeout 60 "$DOCKER" wait "$c" >/dev/null
  "$DOCKER" logs "$c" >/dev/null 2>&1
  "$DOCKER" rm "$c" >/dev/null
}
export -f seed_one

seed_containers() { # NET [RUNTIME]: ms for the seed's pattern over the ids
  export BENCH_NET=$1 BENCH_RUNTIME=${2:-runc} BENCH_TAG="bench-$$"
  local started
  started=$(now_ms)
  parallel -j "$slots" seed_one :::: "$work/containers.txt"
  echo $(($(now_ms) - started))
}

# testfleet_containers NAME NET [ENV=VALUE...]: ms end to end, one worker of
# $slots slots; its phase timings are kept in $work/phases-NAME.log.
testfleet_containers() {
  local name=$1 net=$2 ms
  shift 2
  # A worker that allows the network and the runtime measured: its default
  # (none and bridge, the engine's runtime) refuses host and crun jobs.
  fleet_ready "$name" 1 "$slots" --allowed-networks "$net" --allowed-runtimes crun
  ms=$([ $# -eq 0 ] || export "$@"; produce --tests "$work/containers.txt" --image testfleet/busybox:latest \
    --network "$net" --timeout 60 --wait -- echo '{id}')
  fleet_stop
  grep "docker phase timings" "$work/worker-1.log" | sed 's/^.*INFO //' >"$work/phases-$name.log" || true
  echo "$ms"
}

phase_means() { # the phase log of a run, as "create 12.3 · start 40.1 …" means in ms
  sed -E 's/.*phase="?([a-z]+)"? count=([0-9]+) mean_ms="?([0-9.]+)"?.*/\1 \3/' "$1" | paste -sd' ' | sed 's/ \([a-z]\)/ · \1/g'
}

# Both sides with the engine's default runtime (runc), then both with crun (the
# target compares the same options on both sides), and testfleet on crun
# against the seed as it ran, on runc.
bench_throughput() {
  seq -f 'c%04g' "$containers" >"$work/containers.txt"
  local net seed fleet seed_crun fleet_crun
  for net in host none; do
    log "throughput, network $net: seed pattern ($containers containers, -j$slots)"
    seed=$(seed_containers "$net")
    [ "$net" = host ] && seed_host_ms=$seed
    log "throughput, network $net: testfleet, a fresh container per test"
    fleet=$(testfleet_containers "fresh-$net" "$net")
    log "throughput, network $net: both again with --runtime crun"
    seed_crun=$(seed_containers "$net" crun)
    fleet_crun=$(testfleet_containers "crun-$net" "$net" TESTFLEET_RUN__RUNTIME=crun)
    row "throughput ($net)" "seed pattern, containers/s" "$(rate "$containers" "$seed")"
    row "throughput ($net)" "testfleet fresh, containers/s" "$(rate "$containers" "$fleet")"
    row "throughput ($net)" "fresh ÷ seed" "$(ratio "$seed" "$fleet")" ">=" 1.3
    row "throughput ($net)" "fresh phase means, ms" "$(phase_means "$work/phases-fresh-$net.log")"
    row "throughput ($net)" "crun: seed, testfleet, containers/s" \
      "$(rate "$containers" "$seed_crun"), $(rate "$containers" "$fleet_crun")"
    row "throughput ($net)" "crun: fresh ÷ seed, both crun" "$(ratio "$seed_crun" "$fleet_crun")" ">=" 1.3
    row "throughput ($net)" "fresh on crun ÷ seed on runc" "$(ratio "$seed" "$fleet_crun")"
    row "throughput ($net)" "crun phase means, ms" "$(phase_means "$work/phases-crun-$net.log")"
  done
}

bench_warm() {
  seq -f 'c%04g' "$containers" >"$work/containers.txt"
  local net=host seed=${seed_host_ms:-} fleet
  if [ -z "$seed" ]; then # not measured by `throughput` in this run
    log "warm, network $net: seed pattern"
    seed=$(seed_containers "$net")
  fi
  log "warm, network $net: testfleet warm mode (reuse $warm_reuse)"
  fleet=$(testfleet_containers "warm-$net" "$net" TESTFLEET_RUN__CONTAINER_MODE=warm \
    "TESTFLEET_RUN__WARM_REUSE=$warm_reuse")
  row "warm ($net)" "testfleet warm, containers/s" "$(rate "$containers" "$fleet")"
  row "warm ($net)" "warm ÷ seed" "$(ratio "$seed" "$fleet")" ">=" 3
  row "warm ($net)" "warm phase means, ms" "$(phase_means "$work/phases-warm-$net.log")"
}

# ---------------------------------------------------------------- (c) overhead
# p50 and p99 of (start − publish) over a report's attempts, in ms.
latency() {
  python3 - "$1" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
lat = sorted(a["started_at_ms"] - a["published_at_ms"]
             for t in report["tests"] for a in t["attempts"]
             if a.get("started_at_ms") and a.get("published_at_ms"))
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(pick(0.50), pick(0.99))
EOF
}

bench_overhead() {
  seq -f 'n%06g' "$overhead_n" >"$work/noop.txt"
  log "overhead: parallel -j$slots true over $overhead_n ids"
  local started seed fleet extra p50 p99 hwm
  started=$(now_ms)
  parallel -j "$slots" true :::: "$work/noop.txt"
  seed=$(($(now_ms) - started))
  log "overhead: testfleet, process executor, $overhead_n no-op tests"
  fleet_ready overhead 1 "$slots" --executors process
  fleet=$(produce --tests "$work/noop.txt" --executor process --timeout 60 --wait -- true '{id}')
  hwm=$(aggregator_hwm_mb)
  fleet_stop
  read -r p50 p99 < <(latency "$(last_report)")
  # The same with worker.prefetch_extra = slots: a slot starts its next test
  # while its last result is being confirmed (opt-in; see defaults.toml).
  log "overhead: testfleet again, worker.prefetch_extra = $slots"
  export TESTFLEET_WORKER__PREFETCH_EXTRA=$slots
  fleet_ready overhead-extra 1 "$slots" --executors process
  unset TESTFLEET_WORKER__PREFETCH_EXTRA
  extra=$(produce --tests "$work/noop.txt" --executor process --timeout 60 --wait -- true '{id}')
  fleet_stop
  row overhead "parallel -j$slots true, tests/s" "$(rate "$overhead_n" "$seed")"
  row overhead "testfleet, tests/s" "$(rate "$overhead_n" "$fleet")"
  row overhead "testfleet ÷ parallel" "$(ratio "$seed" "$fleet")" ">=" 2.5
  row overhead "prefetch_extra=$slots: tests/s" "$(rate "$overhead_n" "$extra")"
  row overhead "prefetch_extra=$slots: ÷ parallel" "$(ratio "$seed" "$extra")" ">=" 2.5
  row overhead "publish→start p50, ms" "$p50"
  row overhead "publish→start p99, ms" "$p99"
  row overhead "aggregator peak RSS, MB" "$hwm"
  if [ -n "$baseline_bin" ]; then overhead_against_baseline; fi
}

# The default overhead run of this tree and of the baseline, alternated twice
# so that a drift of the machine touches both alike; their rates and ratio.
overhead_against_baseline() {
  local ours=0 theirs=0 round ms saved_bin=$bin
  for round in 1 2; do
    for side in ours theirs; do
      if [ "$side" = theirs ]; then bin=$baseline_bin; fi
      log "overhead: round $round, $side ($([ "$side" = ours ] && echo this tree || echo "$baseline_rev"))"
      fleet_ready "overhead-$side" 1 "$slots" --executors process
      ms=$(produce --tests "$work/noop.txt" --executor process --timeout 60 --wait -- true '{id}')
      fleet_stop
      bin=$saved_bin
      if [ "$side" = ours ]; then ours=$((ours + ms)); else theirs=$((theirs + ms)); fi
    done
  done
  row overhead "this tree, 2 runs: tests/s" "$(rate $((2 * overhead_n)) "$ours")"
  row overhead "baseline $baseline_rev, 2 runs: tests/s" "$(rate $((2 * overhead_n)) "$theirs")"
  row overhead "this tree ÷ baseline" "$(ratio "$theirs" "$ours")" ">=" 0.9
}

# ---------------------------------------------------------------- wide
# Many slots: one worker of $wide_slots slots runs $wide_n tests that each
# sleep a second, against xargs -P $wide_slots over the same ids. Sleeping
# costs no CPU, so what this times is how fast the worker fills free slots
# (its taker) and the fleet's round trip per test.
bench_wide() {
  seq -f 'w%06g' "$wide_n" >"$work/wide.txt"
  local started seed fleet
  log "wide: xargs -P $wide_slots, $wide_n ids that sleep 1 s"
  started=$(now_ms)
  xargs -P "$wide_slots" -n 1 sh -c 'sleep 1' wide <"$work/wide.txt"
  seed=$(($(now_ms) - started))
  fleet=$(wide_fleet "$bin" wide)
  # The same worker taking one job at a time, as before gets_in_flight.
  local one
  one=$(TESTFLEET_WORKER__GETS_IN_FLIGHT=1 wide_fleet "$bin" wide-one)
  row wide "xargs -P$wide_slots sleep 1, s" "$(ratio "$seed" 1000 1)"
  row wide "testfleet, $wide_slots slots, s" "$(ratio "$fleet" 1000 1)"
  row wide "testfleet ÷ xargs (time)" "$(ratio "$fleet" "$seed")" "<=" 1.5
  row wide "gets_in_flight=1: s" "$(ratio "$one" 1000 1)"
  row wide "gets_in_flight=1 ÷ xargs (time)" "$(ratio "$one" "$seed")"
  if [ -n "$baseline_bin" ]; then
    local theirs
    theirs=$(wide_fleet "$baseline_bin" "wide-$baseline_rev")
    row wide "baseline $baseline_rev ÷ xargs (time)" "$(ratio "$theirs" "$seed")"
  fi
}

wide_fleet() { # BIN NAME: ms of the wide run on BIN's binaries, every test passed
  local saved_bin=$bin ms
  bin=$1
  log "wide: testfleet ($2), one worker of $wide_slots slots"
  fleet_ready "$2" 1 "$wide_slots" --executors process
  ms=$(produce --tests "$work/wide.txt" --executor process --timeout 60 --wait -- sh -c 'sleep 1' '{id}')
  fleet_stop
  bin=$saved_bin
  echo "$ms"
}

# ---------------------------------------------------------------- (d) scale
bench_scale() {
  seq -f 's%07g' "$scale_n" >"$work/scale.txt"
  log "scale: $scale_n no-op tests through the process executor"
  # Scale is about the pipeline's capacity, not a comparison: 2 workers × 8
  # slots, so that runs are bound by the broker and aggregator, not by slots
  # waiting on confirms.
  fleet_ready scale 2 8 --executors process
  local started published finished hwm
  started=$(now_ms)
  # Without --wait the producer returns once every job is confirmed: its time
  # is the publish time. The run's end is the aggregator's "run finished".
  published=$(produce --tests "$work/scale.txt" --executor process --timeout 60 -- true '{id}')
  wait_log "$work/aggregator.log" "run finished" 3600
  finished=$(($(now_ms) - started))
  hwm=$(aggregator_hwm_mb)
  fleet_stop
  row scale "tests" "$scale_n"
  row scale "producer publish rate, jobs/s" "$(rate "$scale_n" "$published")"
  row scale "total time, s" "$(python3 -c "print(f'{$finished/1000:.1f}')")" "<" 600
  row scale "aggregator peak RSS, MB" "$hwm" "<" 256
}

# ---------------------------------------------------------------- (e) scheduling
# 200 ids `tNNN-SECONDS` with heavy-tailed durations, in a fixed shuffled order.
sched_ids() {
  python3 - "$sched_scale" <<'EOF'
import random, sys
scale = float(sys.argv[1])
durations = [6.0] * 2 + [2.0] * 6 + [0.5] * 24 + [0.1] * 168
random.Random(5).shuffle(durations)
for i, d in enumerate(durations):
    print(f"t{i:03d}-{d * scale:.3f}")
EOF
}

# makespan ÷ max(longest, total ÷ slots) of a report, from measured durations.
sched_ratio() {
  python3 - "$1" "$slots" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
slots = int(sys.argv[2])
attempts = [a for t in report["tests"] for a in t["attempts"] if a.get("started_at_ms")]
makespan = max(a["finished_at_ms"] for a in attempts) - min(a["started_at_ms"] for a in attempts)
durations = [a["duration_ms"] for a in attempts]
bound = max(max(durations), sum(durations) / slots)
print(f"{makespan / bound:.3f} {makespan / 1000:.1f} {bound / 1000:.1f}")
EOF
}

bench_scheduling() {
  sched_ids >"$work/sched.txt"
  local suite="bench-sched-$$-$(now_ms)" order value makespan bound
  fleet_ready scheduling 1 "$slots" --executors process
  # The first run (arrival order) records the history the second one uses.
  for order in arrival longest-first; do
    log "scheduling: $(wc -l <"$work/sched.txt") heavy-tailed tests, order $order"
    produce --tests "$work/sched.txt" --executor process --suite "$suite" --timeout 60 \
      --wait -- sh -c 'sleep "${1##*-}"' sh '{id}' >/dev/null
    read -r value makespan bound < <(sched_ratio "$(last_report)")
    row scheduling "$order: makespan, bound (s)" "$makespan, $bound"
    if [ "$order" = arrival ]; then
      row scheduling "arrival: makespan ÷ bound" "$value"
    else
      row scheduling "longest-first: makespan ÷ bound" "$value" "<=" 1.10
    fi
  done
  fleet_stop
}

# ---------------------------------------------------------------- (g) fairness
# Runs sharing one fleet (2 workers × 4 slots, process executor, tests of
# 0.1 s), each run in its own queue (run.queue = "own", the default) and
# then all in the shared FIFO queue: a small run submitted while a big one
# holds every slot, against the small run alone; then two equal runs
# submitted together.
fair_tests() { # COUNT NAME: ids NAME-0000…, one per line
  seq -f "$2-%04g" 0 $(($1 - 1))
}

fair_produce() { # MODE IDS_FILE [ARGS...]: the producer's ms, reports under $work/reports
  local mode=$1 ids=$2
  shift 2
  TESTFLEET_RUN__QUEUE=$mode produce --tests "$ids" --executor process --timeout 60 "$@" \
    -- sh -c 'sleep 0.1' sh '{id}'
}

# first_start_ms REPORT SINCE_MS: the run's first test start after SINCE_MS.
first_start_ms() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
starts = [a["started_at_ms"] for t in report["tests"] for a in t["attempts"] if a.get("started_at_ms")]
print(min(starts) - int(sys.argv[2]))
EOF
}

bench_fairness() {
  fair_tests "$big_n" big >"$work/fair-big.txt"
  fair_tests "$small_n" small >"$work/fair-small.txt"
  fair_tests "$equal_n" a >"$work/fair-a.txt"
  fair_tests "$equal_n" b >"$work/fair-b.txt"
  local mode alone behind first submitted a_ms b_ms spread a b
  for mode in own shared; do
    log "fairness ($mode): $small_n tests alone, then behind $big_n"
    fleet_ready "fair-$mode" 2 4 --executors process
    alone=$(fair_produce "$mode" "$work/fair-small.txt" --wait)
    fair_produce "$mode" "$work/fair-big.txt" >/dev/null
    wait_log "$work/worker-2.log" "test started" 60
    sleep 1
    submitted=$(now_ms)
    behind=$(fair_produce "$mode" "$work/fair-small.txt" --wait)
    first=$(first_start_ms "$(last_report)" "$submitted")
    fleet_stop
    log "fairness ($mode): two runs of $equal_n submitted together"
    fleet_ready "fair-$mode-equal" 2 4 --executors process
    fair_produce "$mode" "$work/fair-a.txt" --wait >"$work/fair-a.ms" &
    a=$!
    fair_produce "$mode" "$work/fair-b.txt" --wait >"$work/fair-b.ms" &
    b=$!
    wait "$a" "$b"
    fleet_stop
    a_ms=$(cat "$work/fair-a.ms") b_ms=$(cat "$work/fair-b.ms")
    spread=$(python3 -c "import sys; a,b=map(int,sys.argv[1:]); print(f'{abs(a-b)/max(a,b):.3f}')" "$a_ms" "$b_ms")
    row "fairness ($mode)" "small run alone, s" "$(ratio "$alone" 1000)"
    if [ "$mode" = own ]; then
      row "fairness ($mode)" "behind the big run: first start, s" "$(ratio "$first" 1000)" "<=" 2
      row "fairness ($mode)" "behind the big run ÷ alone" "$(ratio "$behind" "$alone")" "<=" 2
      row "fairness ($mode)" "two equal runs: finish spread" "$spread" "<=" 0.10
    else
      row "fairness ($mode)" "behind the big run: first start, s" "$(ratio "$first" 1000)"
      row "fairness ($mode)" "behind the big run ÷ alone" "$(ratio "$behind" "$alone")"
      row "fairness ($mode)" "two equal runs: finish spread" "$spread"
    fi
  done
}

# ---------------------------------------------------------------- (f) recovery
bench_recovery() {
  log "recovery: SIGKILL a worker mid-test; time until the test starts elsewhere"
  echo rec-1 >"$work/recovery.txt"
  fleet_ready recovery 1 1 --executors process
  "$bin/testfleet-producer" --order arrival --report-dir "$work/reports" --tests "$work/recovery.txt" \
    --executor process --timeout 60 --wait -- sleep 2 >>"$work/producer.out" 2>>"$work/producer.log" &
  local producer=$! victim=${fleet_pids[1]} child killed_at started
  wait_log "$work/worker-1.log" "test started" 60
  # The second worker joins only now, so the job was certainly the first's.
  "$bin/testfleet-worker" --concurrency 1 --worker-id recovery-rescuer --executors process \
    >"$work/worker-2.log" 2>&1 &
  fleet_pids+=($!)
  wait_log "$work/worker-2.log" "connected to the broker" 60
  sleep 1
  child=$(pgrep -P "$victim" | head -1 || true)
  killed_at=$(now_ms)
  kill -KILL "$victim"
  # A SIGKILLed worker cannot kill its test's process group: this script does.
  [ -z "$child" ] || kill -KILL -- "-$child" 2>/dev/null || true
  wait "$producer" || true
  every_test_passed "$(last_report)"
  started=$(python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
print(min(a['started_at_ms'] for t in r['tests'] for a in t['attempts']
          if a.get('worker_id') == 'recovery-rescuer'))" "$(last_report)")
  fleet_stop
  row recovery "SIGKILL → start elsewhere, s" "$(python3 -c "print(f'{($started - $killed_at) / 1000:.3f}')")" "<" 2
}

# ---------------------------------------------------------------- (g) real suites, batched
# Each suite: the runner alone (serial, one container or process) beside the
# fleet's one-line run (`--preset … --image …`), batched, listed where its
# tests run; the fleet's figure is its second run (with the first's history),
# producer start to verdict, discovery included. One round (`--max-rounds 1`):
# the runner alone retries nothing either, and the pass/fail sets must agree.

# same_sets SERIAL_LOG REPORT_JSON FORMAT: "yes N" when every test passed or
# failed on both sides alike, else "NO …"; FORMAT is pytest-v (pytest's -v
# lines) or go-json.
same_sets() {
  python3 - "$@" <<'EOF'
import json, re, sys
log, report, form = sys.argv[1:4]
alone = {}
if form == "pytest-v":
    for line in open(log, errors="replace"):
        m = re.match(r"^(.+?::.*?) (PASSED|SKIPPED|XFAIL|FAILED|ERROR|XPASS)(?: |$)", line)
        if m:
            alone[m[1]] = "pass" if m[2] in ("PASSED", "SKIPPED", "XFAIL") else "fail"
else:
    for line in open(log, errors="replace"):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        t = e.get("Test")
        if t and "/" not in t and e.get("Action") in ("pass", "fail", "skip"):
            alone[t] = "fail" if e["Action"] == "fail" else "pass"
r = json.load(open(report))
fleet = {t["id"]: "pass" if t["status"] in ("Passed", "Flaky") else "fail" for t in r["tests"]}
if alone and alone == fleet:
    print(f"yes {len(fleet)}")
else:
    differ = sorted(k for k in set(alone) & set(fleet) if alone[k] != fleet[k])[:5]
    print(f"NO alone={len(alone)} fleet={len(fleet)} one-sided={sorted(set(alone) ^ set(fleet))[:5]} differ={differ}")
EOF
}

# containers REPORT_JSON: containers (or processes) started and per test.
containers() {
  python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
alone = sum(1 for t in r["tests"] for a in t["attempts"] if not a.get("batch") and a.get("worker_id"))
n = len(r.get("batches", [])) + alone
print(f"{n} {n / max(1, len(r['tests'])):.3f}")
EOF
}

# timed COMMAND…: the command's wall time in ms (its output to $work/timed.log).
timed() {
  local started; started=$(now_ms)
  "$@" >>"$work/timed.log" 2>&1 || true
  echo $(($(now_ms) - started))
}

# one_line_twice NAME IMAGE ARGS…: the fleet's one-line run twice; prints the
# second run's ms. Reports under $work/reports.
one_line_twice() {
  local name=$1 image=$2 ms
  shift 2
  local suite="bench-$name-$$-$(now_ms)"
  for run in first second; do
    ms=$(expect=any order=longest-first produce --suite "$suite" --image "$image" --timeout 300 --max-rounds 1 --wait "$@")
    log "suites: $name, fleet $run run: $ms ms"
  done
  echo "$ms"
}

suite_six() {
  local image=testfleet/six:1.16.0 serial fleet
  pypi_suite_image six==1.16.0 1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926 "$image"
  serial=$(timed "$DOCKER" run --rm --network none "$image" python3 -m pytest -p no:cacheprovider -v)
  cp "$work/timed.log" "$work/six-serial.log"; : >"$work/timed.log"
  fleet_ready six 2 2
  fleet=$(one_line_twice six "$image" --preset pytest)
  fleet_stop
  suite_rows six "$serial" "$fleet" 2.0 "$(same_sets "$work/six-serial.log" "$(last_report)" pytest-v)"
}

suite_networkx() {
  local image=testfleet/networkx:3.2.1 serial fleet n2 n4 pytest=(python3 -m pytest -p no:cacheprovider -v)
  pypi_suite_image networkx==3.2.1 9f1bb5cf3409bf324e0a722c20bdb4c20ee39bf1c30ce8ae499c8502b0b5e0c6 \
    "$image" python3-pytest-xdist
  serial=$(timed "$DOCKER" run --rm --network none "$image" "${pytest[@]}")
  cp "$work/timed.log" "$work/networkx-serial.log"; : >"$work/timed.log"
  n2=$(timed "$DOCKER" run --rm --network none "$image" "${pytest[@]}" -n 2)
  n4=$(timed "$DOCKER" run --rm --network none "$image" "${pytest[@]}" -n 4)
  fleet_ready networkx 2 2
  fleet=$(one_line_twice networkx "$image" --preset pytest)
  fleet_stop
  suite_rows networkx "$serial" "$fleet" 1.0 "$(same_sets "$work/networkx-serial.log" "$(last_report)" pytest-v)"
  row suites "networkx: pytest-xdist -n 2, -n 4 (s)" "$(secs "$n2"), $(secs "$n4")"
  row suites "networkx: fleet ÷ xdist -n 2, ÷ -n 4" "$(ratio "$fleet" "$n2"), $(ratio "$fleet" "$n4")"
}

suite_go() {
  local dir serial fleet
  dir="$(go env GOROOT)/src/strings"
  # The package built once first, as the fleet's first run builds it: both
  # sides then run tests, not the compiler (`-count=1`: no cached results).
  (cd "$dir" && go test -count=1 . >/dev/null 2>&1) || true
  serial=$(cd "$dir" && timed sh -c "go test -count=1 -json . > '$work/go-alone.json'")
  fleet_ready go 2 2 --executors process
  fleet=$(one_line_twice go unused --preset go --executor process --workdir "$dir" \
    --discover "cd '$dir' && go test -list .")
  fleet_stop
  suite_rows "go strings" "$serial" "$fleet" "" "$(same_sets "$work/go-alone.json" "$(last_report)" go-json)"
}

# A CPU-bound third-party suite whose conftests collect data files as tests
# (Pygments: lexer example files and snippets, 5,346 tests), which no fixture of
# tests/ was shaped around: alone (one pytest in one container), split in two
# halves by hand (two containers at once, each collecting the suite as usual
# and keeping its half, by the listing's order), pytest-xdist -n 2, and the
# fleet's one-line run on 2 workers × 2 slots. Pass/fail sets compared id by id.
suite_pygments() {
  local image=testfleet/pygments:2.21.0 serial halves n2 fleet pytest=(python3 -m pytest -p no:cacheprovider)
  pypi_suite_image pygments==2.21.0 610ca751c9bc2492b38eb9a38a7fbc93edbbb2d7182edaf34e66ae493dee5c8c \
    "$image" python3-wcag-contrast-ratio python3-pytest-xdist
  serial=$(timed "$DOCKER" run --rm --network none "$image" "${pytest[@]}" -v)
  cp "$work/timed.log" "$work/pygments-serial.log"; : >"$work/timed.log"
  halves=$(timed halves_by_hand "$image")
  n2=$(timed "$DOCKER" run --rm --network none "$image" "${pytest[@]}" -n 2)
  fleet_ready pygments 2 2
  fleet=$(one_line_twice pygments "$image" --preset pytest)
  fleet_stop
  suite_rows pygments "$serial" "$fleet" 0.9 "$(same_sets "$work/pygments-serial.log" "$(last_report)" pytest-v)"
  row suites "pygments: halves by hand, xdist -n 2 (s)" "$(secs "$halves"), $(secs "$n2")"
  row suites "pygments: fleet ÷ halves by hand" "$(ratio "$fleet" "$halves")"
  row suites "pygments: fleet ÷ xdist -n 2" "$(ratio "$fleet" "$n2")"
}

# halves_by_hand IMAGE: the suite's listing cut in two halves, each run in a
# container of its own at once, collecting as the suite does and deselecting
# the other half (pytest's --deselect, by node id).
halves_by_hand() {
  local image=$1 ids half
  ids=$("$DOCKER" run --rm --network none "$image" python3 -m pytest -p no:cacheprovider --collect-only -q \
    | grep '::' || true)
  half=$(( $(printf '%s\n' "$ids" | wc -l) / 2 ))
  printf '%s\n' "$ids" | head -n "$half" > "$work/second-half.deselect"
  printf '%s\n' "$ids" | tail -n +"$((half + 1))" > "$work/first-half.deselect"
  for part in first second; do
    "$DOCKER" run --rm --network none -v "$work/$part-half.deselect:/deselect:ro" "$image" python3 -c \
      'import sys, pytest; sys.exit(pytest.main(["-p", "no:cacheprovider", "-q"] + ["--deselect=" + i for i in open("/deselect").read().splitlines()]))' \
      > "$work/$part-half.log" 2>&1 &
  done
  wait
}

# 0.05-3 s of sleeping each, heavy-tailed, in a batched busybox runner that
# writes a JUnit report; on 8 slots.
suite_sleep() {
  local value makespan bound n per limit
  python3 - "$sleep_n" >"$work/sleep.txt" <<'EOF'
import random, sys
rng = random.Random(11)
for i in range(int(sys.argv[1])):
    print(f"s{i:04d}-{int(50 + 2950 * rng.random() ** 4)}")
EOF
  local runner='r="$1"; shift; c=""; for id in "$@"; do ms=${id##*-}; sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"; c="$c<testcase classname=\"s\" name=\"$id\" time=\"$((ms / 1000)).$(printf %03d $((ms % 1000)))\"/>"; done; printf "<testsuites><testsuite>%s</testsuite></testsuites>" "$c" > "$r"'
  fleet_ready sleep 2 4
  local suite="bench-sleep-$$-$(now_ms)"
  for run in first second; do
    order=longest-first produce --tests "$work/sleep.txt" --suite "$suite" --image testfleet/busybox:latest \
      --timeout 60 --slots 8 --report-format junit:name --wait -- sh -c "$runner" sh '{report}' '{ids}' >/dev/null
  done
  fleet_stop
  read -r value makespan bound < <(python3 - "$(last_report)" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
b = r["batches"]
makespan = max(x["finished_at_ms"] for x in b) - min(x["started_at_ms"] for x in b)
d = [a["duration_ms"] for t in r["tests"] for a in t["attempts"]]
bound = max(max(d), sum(d) / 8)
print(f"{makespan / bound:.3f} {makespan / 1000:.1f} {bound / 1000:.1f}")
EOF
)
  read -r n per < <(containers "$(last_report)")
  limit=$((8 * 4 + $(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sum(len(t['attempts'])-1 for t in r['tests']))" "$(last_report)")))
  row suites "sleep ($sleep_n tests, 8 slots): makespan, bound (s)" "$makespan, $bound"
  row suites "sleep: makespan ÷ max(longest, total ÷ slots)" "$value" "<=" 1.10
  row suites "sleep: containers (limit slots × 4 + retries = $limit)" "$n" "<=" "$limit"
  row suites "sleep: containers per test" "$per"
}

# suite_rows NAME SERIAL_MS FLEET_MS TARGET_RATIO SAME_SETS
suite_rows() {
  local n per
  read -r n per < <(containers "$(last_report)")
  row suites "$1: alone, fleet second run (s)" "$(secs "$2"), $(secs "$3")"
  if [ -n "$4" ]; then
    row suites "$1: fleet ÷ alone" "$(ratio "$3" "$2")" "<=" "$4"
  else
    row suites "$1: fleet ÷ alone" "$(ratio "$3" "$2")"
  fi
  row suites "$1: same pass/fail set" "$5"
  row suites "$1: containers (or processes), per test" "$n, $per"
}

secs() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1000:.1f}')" "$1"; }

bench_suites() {
  source scripts/lib/pypi-suite.sh
  command -v go >/dev/null || scripts/setup-runners.sh
  local names=${TESTFLEET_BENCH_SUITES:-six go sleep pygments networkx}
  for name in $names; do
    case $name in
      pygments | networkx) [ "$quick" = 1 ] || "suite_$name" ;;
      *) "suite_$name" ;;
    esac
  done
}

# ---------------------------------------------------------------- ab
# An A/B run against an oracle: ab_n ids of known kinds in two busybox
# images that differ by /side (regressions, fixes, failures on both sides,
# passes, and one id that fails at random on both), run batched by the
# fleet with --confirm 3, and by the oracle: each image runs every id three
# times serially in one container. Spurious regressions are ids the run
# calls regressed that the oracle does not (it passed every time on the
# baseline and failed every time on the candidate); all the oracle's must
# be found. The random id is left out of both: either may call it
# anything by chance.
AB_PLAY='
side=$(cat /side)
case "$1:$side" in
  reg-*:cand|fix-*:base|fail-*:*) exit 1 ;;
  flaky-*:*) [ $((RANDOM % 2)) = 0 ] ;;
  *) exit 0 ;;
esac'

ab_images() {
  local side dir
  for side in base cand; do
    dir=$work/ab-$side
    mkdir -p "$dir"
    echo "$side" >"$dir/side"
    printf '%s\n' "$AB_PLAY" >"$dir/play"
    printf 'FROM testfleet/busybox:latest\nCOPY side /side\nCOPY play /play\n' >"$dir/Dockerfile"
    "$DOCKER" build -q -t "testfleet-bench/ab-$side:latest" "$dir" >/dev/null
  done
}

# ab_ids N: N ids, a tenth each regressions, fixes and failures on both
# sides, one flaky, the rest passing.
ab_ids() {
  local n=$1 tenth=$(($1 / 10)) i
  for i in $(seq "$tenth"); do echo "reg-$i"; echo "fix-$i"; echo "fail-$i"; done
  echo flaky-1
  for i in $(seq $((n - 3 * tenth - 1))); do echo "pass-$i"; done
}

# ab_oracle SIDE: "id P|F" for each id, P when it passed all three times.
ab_oracle() {
  "$DOCKER" run --rm -i --network none "testfleet-bench/ab-$1:latest" sh -c '
    while read -r id; do
      verdict=P
      for _ in 1 2 3; do sh /play "$id" || verdict=F; done
      echo "$id $verdict"
    done' <"$work/ab-ids.txt" | LC_ALL=C sort
}

bench_ab() {
  ab_images
  ab_ids "$ab_n" >"$work/ab-ids.txt"
  ab_oracle base >"$work/ab-oracle-base.txt"
  ab_oracle cand >"$work/ab-oracle-cand.txt"
  LC_ALL=C join "$work/ab-oracle-base.txt" "$work/ab-oracle-cand.txt" |
    awk '$2 == "P" && $3 == "F" { print $1 }' >"$work/ab-oracle-regressed.txt"
  fleet_ready ab 2 2
  local ms
  # The batch writes testfleet's jsonl report: each id's outcome is the
  # play script's.
  ms=$(expect=any produce --tests "$work/ab-ids.txt" --image testfleet-bench/ab-cand:latest \
    --baseline-image testfleet-bench/ab-base:latest --confirm 3 --timeout 60 --wait \
    --batch auto --report-format jsonl:name -- sh -c '
      for id in "$@"; do
        if sh /play "$id" >/dev/null 2>&1; then outcome=passed; else outcome=failed; fi
        printf "{\"id\": \"%s\", \"outcome\": \"%s\"}\n" "$id" "$outcome" >> "$0"
      done' '{report}' '{ids}')
  fleet_stop
  python3 - "$(last_report)" "$work/ab-oracle-regressed.txt" >"$work/ab-figures.txt" <<'EOF'
import json, sys
comparison = json.load(open(sys.argv[1]))["comparison"]
# The random id is no regression, whatever one run of it says.
oracle = {i for i in open(sys.argv[2]).read().split() if not i.startswith("flaky-")}
reported = {t["id"] for t in comparison["tests"]
            if t["class"] == "regressed" and not t["id"].startswith("flaky-")}
confirmed = {t["id"] for t in comparison["tests"] if t["class"] == "regressed" and t["confirmed"]}
print(len(reported - oracle), len(confirmed & oracle), len(oracle))
EOF
  local spurious found expected
  read -r spurious found expected <"$work/ab-figures.txt"
  row ab "ids (a tenth each regressed, fixed, failing; 1 flaky)" "$ab_n"
  row ab "spurious regressions" "$spurious" "<=" 0
  row ab "oracle's regressions confirmed, of $expected" "$found" ">=" "$expected"
  row ab "A/B run, s" "$(secs "$ms")"
}

# ---------------------------------------------------------------- campaign
# The talk's pattern for "does it install" against testfleet through the
# package cache, over the packages of scripts/lib/campaign-packages.txt (200
# of bookworm's utilities needing nothing beyond libc, chosen once from the
# archive's Packages by size and dependencies), in a Debian image that
# already carries the package lists: each container downloads only what it
# installs, from Debian's mirror over the bridge.
CAMPAIGN_IMAGE=testfleet-bench/campaign-lists:latest
CAMPAIGN_SCRIPT='DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$0" >/dev/null'

campaign_image() {
  "$DOCKER" image inspect "$CAMPAIGN_IMAGE" >/dev/null 2>&1 && return
  log "building $CAMPAIGN_IMAGE (bookworm with its package lists)"
  "$DOCKER" build -q -t "$CAMPAIGN_IMAGE" - >/dev/null <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update
DOCKERFILE
}

# One id the talk's way: docker run under timeout, S/F/T from the exit code.
talk_one() {
  local code=0
  timeout 300 "$DOCKER" run --rm --network bridge "$CAMPAIGN_IMAGE" sh -c "$CAMPAIGN_SCRIPT" "$1" \
    >/dev/null 2>&1 || code=$?
  case $code in 0) echo "$1 S" ;; 124) echo "$1 T" ;; *) echo "$1 F" ;; esac
}
export -f talk_one
export CAMPAIGN_IMAGE CAMPAIGN_SCRIPT

# campaign_sets REPORT_JSON: the run's ids as "id S|F|T", sorted.
campaign_sets() {
  python3 - "$1" <<'EOF'
import json, sys
letter = {"Passed": "S", "Flaky": "S", "TimedOut": "T"}
# Byte order, as LC_ALL=C sort has the other side.
for t in sorted(json.load(open(sys.argv[1]))["tests"], key=lambda t: t["id"].encode()):
    print(t["id"], letter.get(t["status"], "F"))
EOF
}

# cache_hits REPORT_JSON: apt's hit percent over the run, or "none".
cache_hits() {
  python3 - "$1" <<'EOF'
import json, sys
cache = json.load(open(sys.argv[1])).get("cache") or {}
apt = [c for c in cache.get("caches", []) if c["name"] == "apt"]
hit = apt[0]["hit_percent"] if apt else None
print("none" if hit is None else f"{hit:.0f}")
EOF
}

bench_campaign() {
  campaign_image
  head -n "$campaign_n" scripts/lib/campaign-packages.txt >"$work/campaign.txt"
  local n talk_ms started
  n=$(wc -l <"$work/campaign.txt")
  started=$(now_ms)
  parallel -j "$slots" talk_one :::: "$work/campaign.txt" | LC_ALL=C sort >"$work/campaign-talk.txt"
  talk_ms=$(($(now_ms) - started))
  log "campaign: the talk's pattern, $n ids: $talk_ms ms"

  export TESTFLEET_CACHE_NAME=testfleet-bench-cache TESTFLEET_CACHE_APT_STATS=0 TESTFLEET_CACHE_PYPI_STATS=0
  scripts/cache.sh down
  "$DOCKER" volume rm "$TESTFLEET_CACHE_NAME-apt" "$TESTFLEET_CACHE_NAME-pypi" >/dev/null 2>&1 || true
  scripts/cache.sh up
  scripts/cache.sh config >"$work/cache.toml"
  TESTFLEET_AGGREGATOR__CACHES=$(scripts/cache.sh caches)
  export TESTFLEET_AGGREGATOR__CACHES
  fleet_ready campaign 1 "$slots" --config "$work/cache.toml"
  local pass ms report agree mix
  mix=$(cut -d' ' -f2 "$work/campaign-talk.txt" | sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')
  for pass in 1 2; do
    ms=$(TESTFLEET_RUN__CAP_ADD=CHOWN,DAC_OVERRIDE,FOWNER,FSETID,SETGID,SETUID expect=any \
      produce --tests "$work/campaign.txt" --image "$CAMPAIGN_IMAGE" --network cache \
      --timeout 300 --max-rounds 1 --wait -- sh -c "$CAMPAIGN_SCRIPT" '{id}')
    report=$(last_report)
    campaign_sets "$report" >"$work/campaign-fleet-$pass.txt"
    agree=yes
    if ! cmp -s "$work/campaign-talk.txt" "$work/campaign-fleet-$pass.txt"; then
      agree=NO
      touch "$work/failed"
      log "campaign: FAILED: pass $pass's S/F/T differ from the talk's pattern:"
      diff "$work/campaign-talk.txt" "$work/campaign-fleet-$pass.txt" | head -10 >&2 || true
    fi
    row campaign "testfleet pass $pass, tests/s" "$(rate "$n" "$ms")"
    row campaign "pass $pass: S/F/T as the talk's ($mix)" "$agree"
    row campaign "pass $pass: apt cache hits, %" "$(cache_hits "$report")"
    log "campaign: testfleet pass $pass: $ms ms"
  done
  fleet_stop
  scripts/cache.sh down
  row campaign "talk's pattern (parallel+timeout+docker), tests/s" "$(rate "$n" "$talk_ms")"
  row campaign "pass 2 over the talk's pattern, ×" "$(ratio "$talk_ms" "$ms")" ">=" 2
}

# ---------------------------------------------------------------- table
print_table() {
  printf '\n'
  printf '%s\n' "testfleet benchmarks — $(date -u +%FT%TZ) — $(nproc) cores — profile ${profile}$([ "$quick" = 1 ] && echo ' — QUICK (smoke test sizes, not benchmark figures)')"
  printf '%s\n' "load at end: $(uptime | sed 's/.*load average/load average/')"
  {
    echo "benchmark|figure|value|target|met"
    printf '%s\n' "${rows[@]}"
  } | column -t -s '|'
}

prepare
log "load before: $(uptime)"
for name in "${selected[@]}"; do
  "bench_$name"
done
print_table
if [ -e "$work/failed" ]; then
  log "a benchmark's runs did not do what it times (see FAILED above): its figures are no figures"
  exit 1
fi
