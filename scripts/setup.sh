#!/usr/bin/env bash
# Makes a fresh Debian machine ready for testfleet, idempotently: installs Docker,
# RabbitMQ and what the local images need if missing, starts dockerd and RabbitMQ if
# they are not running, waits until both answer, and builds the local images only if
# they are missing; with TESTFLEET_CACHE=1, starts the package cache too
# (scripts/cache.sh). Nothing is pulled: every image is built here (see DEVELOPERS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

need_packages=()
command -v dockerd >/dev/null || need_packages+=(docker.io)
command -v rabbitmq-server >/dev/null || need_packages+=(rabbitmq-server)
command -v mmdebstrap >/dev/null || need_packages+=(mmdebstrap)
command -v docker-compose >/dev/null || need_packages+=(docker-compose)  # compose.yaml (v1)
[ -x /bin/busybox ] || need_packages+=(busybox-static)
command -v crun >/dev/null || need_packages+=(crun)                # a faster OCI runtime
command -v openssl >/dev/null || need_packages+=(openssl)          # the local CA for amqps
command -v ip >/dev/null || need_packages+=(iproute2)              # network namespaces in tests
# Headless Chromium opens the HTML report in tests/it/html_report.rs.
[ -x /usr/bin/chromium ] || need_packages+=(chromium)
if [ ${#need_packages[@]} -gt 0 ]; then
  log "installing ${need_packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# PyYAML reads the CI examples in tests/it/ci.rs (and the Kubernetes
# manifests' checks): the python3 on PATH, whichever it is.
if ! python3 -c 'import yaml' 2>/dev/null; then
  log "installing PyYAML for python3"
  python3 -m pip install -q pyyaml
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

# crun registered with the engine as "crun", so that a run spec may choose it
# (`run.runtime`). The engine reads daemon.json at start and again on SIGHUP, so
# a running one picks it up without a restart. A daemon.json of someone else's
# is left alone.
DAEMON_JSON=/etc/docker/daemon.json
if [ ! -e "$DAEMON_JSON" ]; then
  mkdir -p /etc/docker
  printf '{\n  "runtimes": { "crun": { "path": "/usr/bin/crun" } }\n}\n' >"$DAEMON_JSON"
elif ! grep -q '"crun"' "$DAEMON_JSON"; then
  log "$DAEMON_JSON does not register crun; runs with run.runtime = \"crun\" will fail"
fi
# crun refuses cgroups in hybrid mode while the cgroup2 hierarchy holds a
# controller ("drop all controllers from cgroupv2"); on these machines that is
# hugetlb alone, unused there. Mounting it as a v1 hierarchy, like every other
# controller here, moves it out of cgroup2. runc works either way.
UNIFIED=/sys/fs/cgroup/unified
if [ -r "$UNIFIED/cgroup.controllers" ] && [ -z "$(cat "$UNIFIED/cgroup.subtree_control")" ]; then
  for controller in $(cat "$UNIFIED/cgroup.controllers"); do
    log "moving the $controller cgroup controller to a v1 hierarchy (for crun)"
    mkdir -p "/sys/fs/cgroup/$controller"
    mount -t cgroup -o "$controller" cgroup "/sys/fs/cgroup/$controller" ||
      log "could not; runs with run.runtime = \"crun\" will fail here"
  done
fi
crun_registered() { "$DOCKER" info --format '{{json .Runtimes}}' | grep -q '"crun"'; }

if ! "$DOCKER" info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log/testfleet
  nohup dockerd >/var/log/testfleet/dockerd.log 2>&1 &
  wait_for dockerd 60 "$DOCKER" info
fi
if grep -q '"crun"' "$DAEMON_JSON" && ! crun_registered; then
  log "reloading dockerd's configuration (crun)"
  pkill -HUP -x dockerd || true
  wait_for "crun in dockerd" 10 crun_registered || true
fi

# A local CA and a server certificate for RabbitMQ's amqps listener (port 5671),
# for localhost and 127.0.0.1. Clients trust the CA through SSL_CERT_FILE.
TLS_DIR=/etc/testfleet/tls
make_tls() {
  mkdir -p "$TLS_DIR" && cd "$TLS_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=testfleet-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile server.ext -out server.pem 2>/dev/null
  chmod 644 server.key  # read by the rabbitmq user
  cd - >/dev/null
}
[ -s "$TLS_DIR/server.pem" ] || { log "making a local CA for amqps"; make_tls; }

# The broker's settings; returns 0 if it had to add any (a running broker must
# then restart to read them).
configure_rabbitmq() {
  local changed=1
  mkdir -p /etc/rabbitmq
  # consumer_timeout must exceed the longest test a worker may hold a job for.
  if ! grep -qs consumer_timeout /etc/rabbitmq/rabbitmq.conf; then
    echo "consumer_timeout = 7200000" >>/etc/rabbitmq/rabbitmq.conf
    changed=0
  fi
  if ! grep -qs listeners.ssl /etc/rabbitmq/rabbitmq.conf; then
    cat >>/etc/rabbitmq/rabbitmq.conf <<EOF
listeners.ssl.default = 5671
ssl_options.cacertfile = $TLS_DIR/ca.pem
ssl_options.certfile = $TLS_DIR/server.pem
ssl_options.keyfile = $TLS_DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
    changed=0
  fi
  return $changed
}

# Installing the package may have started the broker already (Debian's postinst
# does where it can): then it runs without our settings, so restart it once.
if configure_rabbitmq && rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "restarting rabbitmq-server to read its new settings"
  rabbitmqctl -q stop >/dev/null 2>&1 || true
fi
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "starting rabbitmq-server"
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

# The fleet's package cache, when asked: TESTFLEET_CACHE=1 scripts/setup.sh
# (its settings for workers and aggregators: scripts/cache.sh config).
if [ "${TESTFLEET_CACHE:-0}" = 1 ]; then
  scripts/cache.sh up
fi

log "ready: docker $("$DOCKER" version --format '{{.Server.Version}}'), rabbitmq $(rabbitmqctl -q version 2>/dev/null || echo '?')"
