#!/usr/bin/env bash
# A RabbitMQ cluster of three nodes on this machine, beside the default node
# (which it never touches): each node its own name, ports, data and log dirs,
# run as the rabbitmq user (so they share its Erlang cookie), joined with
# `rabbitmqctl join_cluster`. For the cluster fault case (tests/it/cluster.rs)
# and for trying failover by hand.
#
#   scripts/cluster.sh start          # (re)creates the cluster, prints its URLs
#   scripts/cluster.sh urls           # the nodes' AMQP URLs, comma-separated
#   scripts/cluster.sh kill N         # stops node N (1-3) hard: SIGKILL
#   scripts/cluster.sh restart N      # starts node N again; it rejoins
#   scripts/cluster.sh leader QUEUE   # the number of the node leading QUEUE
#   scripts/cluster.sh stop           # stops every node and removes its data
#
# Node N is tfcN@<short hostname>, AMQP on 5680+N, distribution on 25680+N,
# data under /var/lib/rabbitmq/testfleet-cluster/tfcN.
set -euo pipefail

NODES=(1 2 3)
BASE=/var/lib/rabbitmq/testfleet-cluster
HOST=$(hostname -s)
log() { printf '[cluster] %s\n' "$*" >&2; }

node_name() { echo "tfc$1@$HOST"; }
node_port() { echo $((5680 + $1)); }
node_dir() { echo "$BASE/tfc$1"; }
pid_file() { echo "$(node_dir "$1")/tfc$1.pid"; }

ctl() { # node, rabbitmqctl arguments...
  local node=$1; shift
  rabbitmqctl -q -n "$(node_name "$node")" "$@"
}

start_node() {
  local n=$1 dir
  dir=$(node_dir "$n")
  install -d -o rabbitmq -g rabbitmq "$dir" "$dir/log"
  # Its own configuration: the default node's opens TLS on 5671, which two
  # nodes cannot share. A worker holds a job until its test ends, so
  # consumer_timeout must exceed the longest test, as setup.sh sets it.
  printf 'consumer_timeout = 7200000\n' >"$dir/rabbitmq.conf"
  : >"$dir/enabled_plugins"
  chown rabbitmq:rabbitmq "$dir/rabbitmq.conf" "$dir/enabled_plugins"
  runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_PORT="$(node_port "$n")" \
    RABBITMQ_DIST_PORT=$((25680 + n)) \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$dir" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$(pid_file "$n")" \
    /usr/lib/rabbitmq/bin/rabbitmq-server -detached
}

await_node() {
  local n=$1
  for _ in $(seq 120); do
    if ctl "$n" await_startup --timeout 5 >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "node $(node_name "$n") did not start; its log: $(node_dir "$n")/log"
  return 1
}

kill_node() {
  local n=$1 pid
  pid=$(cat "$(pid_file "$n")" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
}

urls() {
  local list=() n
  for n in "${NODES[@]}"; do
    list+=("amqp://guest:guest@127.0.0.1:$(node_port "$n")/%2f?heartbeat=5")
  done
  (IFS=,; echo "${list[*]}")
}

stop_all() {
  local n
  for n in "${NODES[@]}"; do kill_node "$n"; done
  rm -rf "$BASE"
}

start_all() {
  stop_all
  local n
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in "${NODES[@]}"; do await_node "$n"; done
  for n in "${NODES[@]:1}"; do
    ctl "$n" stop_app
    ctl "$n" join_cluster "$(node_name 1)"
    ctl "$n" start_app
  done
  for n in "${NODES[@]}"; do await_node "$n"; done
  local running
  running=$(ctl 1 eval 'length(rabbit_nodes:all_running()).')
  if [ "$running" != "${#NODES[@]}" ]; then
    log "the cluster has $running nodes running, not ${#NODES[@]}"
    return 1
  fi
  log "cluster of ${#NODES[@]} nodes running"
  urls
}

leader() { # queue: the number of the node that leads it, from any live node
  local queue=$1 n line
  for n in "${NODES[@]}"; do
    line=$(ctl "$n" list_queues --no-table-headers name leader 2>/dev/null | awk -v q="$queue" '$1 == q {print $2}') || continue
    if [ -n "$line" ]; then
      echo "$line" | sed -E 's/^tfc([0-9]+)@.*/\1/'
      return 0
    fi
  done
  log "no live node knows a leader of $queue"
  return 1
}

case "${1:-}" in
  start) start_all ;;
  urls) urls ;;
  kill) kill_node "$2" ;;
  restart) start_node "$2"; await_node "$2" ;;
  leader) leader "$2" ;;
  stop) stop_all ;;
  *) echo "usage: $0 start|urls|kill N|restart N|leader QUEUE|stop" >&2; exit 2 ;;
esac
