#!/usr/bin/env bash
# Makes a fresh Debian machine ready for testfleet, idempotently: installs Docker,
# RabbitMQ and what the local images need if missing, starts dockerd and RabbitMQ if
# they are not running, waits until both answer, and builds the local images only if
# they are missing. Nothing is pulled: every image is built here (see DEVELOPERS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

need_packages=()
command -v dockerd >/dev/null || need_packages+=(docker.io)
command -v rabbitmq-server >/dev/null || need_packages+=(rabbitmq-server)
command -v mmdebstrap >/dev/null || need_packages+=(mmdebstrap)
[ -x /bin/busybox ] || need_packages+=(busybox-static)
if [ ${#need_packages[@]} -gt 0 ]; then
  log "installing ${need_packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# Debian's docker.io client talks to the engine it ships with; prefer it.
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker

wait_for() { # name, seconds, command...
  local name=$1 seconds=$2; shift 2
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "$name did not answer within ${seconds}s"; return 1
}

if ! "$DOCKER" info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log/testfleet
  nohup dockerd >/var/log/testfleet/dockerd.log 2>&1 &
  wait_for dockerd 60 "$DOCKER" info
fi

if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "starting rabbitmq-server"
  # consumer_timeout must exceed the longest test a worker may hold a job for.
  if ! grep -qs consumer_timeout /etc/rabbitmq/rabbitmq.conf; then
    mkdir -p /etc/rabbitmq
    echo "consumer_timeout = 7200000" >>/etc/rabbitmq/rabbitmq.conf
  fi
  rabbitmq-server -detached
  wait_for rabbitmq 90 rabbitmq-diagnostics -q ping
  wait_for rabbitmq 60 rabbitmq-diagnostics -q check_port_connectivity
fi

build_image() { # tag, context dir
  if ! "$DOCKER" image inspect "$1" >/dev/null 2>&1; then
    log "building image $1"
    "$DOCKER" build -q -t "$1" "$2" >/dev/null
  fi
}

# A tiny image FROM scratch with Debian's static busybox: a shell and coreutils.
if ! "$DOCKER" image inspect testfleet/busybox:latest >/dev/null 2>&1; then
  cp /bin/busybox images/busybox/busybox
  build_image testfleet/busybox:latest images/busybox
  rm -f images/busybox/busybox
fi
build_image testfleet/examples:latest examples

log "ready: docker $("$DOCKER" version --format '{{.Server.Version}}'), rabbitmq $(rabbitmqctl -q version 2>/dev/null || echo '?')"
