# Sourced by scripts that run a real fleet on this machine: starts an aggregator
# and workers under a queue prefix of their own, and stops them (and deletes the
# prefix's queues) when the script exits. Expects `bin` (the binaries' folder) and
# `work` (a folder for logs and state) to be set.

fleet_pids=()

fleet_stop() {
  for pid in "${fleet_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${fleet_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fleet_pids=()
  # Every queue of the prefix: the fixed ones, runs' own jobs queues, verdict
  # and unclaimed queues.
  local q
  for q in $(rabbitmqctl -q list_queues --no-table-headers name 2>/dev/null |
    awk -v p="$TESTFLEET_BROKER__PREFIX." 'index($0, p) == 1'); do
    rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
  done
}

# fleet_start NAME WORKERS SLOTS [WORKER_ARGS...]: an aggregator and WORKERS
# workers of SLOTS each, with WORKER_ARGS (e.g. `--executors process`) added.
fleet_start() {
  local name=$1 workers=$2 slots=$3
  shift 3
  export TESTFLEET_BROKER__PREFIX="$name-$(date +%s)-$$"
  export TESTFLEET_AGGREGATOR__REPORT_DIR="$work/aggregator-reports"
  export TESTFLEET_AGGREGATOR__STATE_DIR="$work/aggregator-state"
  trap fleet_stop EXIT
  "$bin/testfleet-aggregator" >"$work/aggregator.log" 2>&1 & fleet_pids+=($!)
  for i in $(seq "$workers"); do
    "$bin/testfleet-worker" --concurrency "$slots" --worker-id "$name-worker-$i" "$@" \
      >"$work/worker-$i.log" 2>&1 & fleet_pids+=($!)
  done
}
