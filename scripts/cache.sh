#!/usr/bin/env bash
# The fleet's package cache, on one Docker engine: apt-cacher-ng for Debian
# packages and proxpi for PyPI, each with its stats endpoint
# (images/cache/stats.py), on an --internal network where test containers
# of run.network = "cache" reach them and nothing else, and on a plain
# bridge that leads to their upstreams. Idempotent.
#
#   scripts/cache.sh build   build the two images if missing
#   scripts/cache.sh up      build, then create the networks and start both
#   scripts/cache.sh down    remove the containers and networks (volumes stay)
#   scripts/cache.sh config  print a worker's and an aggregator's settings for it
#   scripts/cache.sh caches  print aggregator.caches as TESTFLEET_AGGREGATOR__CACHES takes it
#
# Settings (environment):
#   TESTFLEET_CACHE_NAME        names of networks, containers, volumes (testfleet-cache)
#   TESTFLEET_CACHE_APT_STATS   host port of apt's stats (3143; 0: any free one)
#   TESTFLEET_CACHE_PYPI_STATS  host port of pypi's stats (3144; 0: any free one)
#   TESTFLEET_CACHE_PYPI_INDEX  proxpi's upstream (https://pypi.org/simple/)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[cache] %s\n' "$*" >&2; }
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker
NAME=${TESTFLEET_CACHE_NAME:-testfleet-cache}
APT_STATS=${TESTFLEET_CACHE_APT_STATS:-3143}
PYPI_STATS=${TESTFLEET_CACHE_PYPI_STATS:-3144}
PYPI_INDEX=${TESTFLEET_CACHE_PYPI_INDEX:-https://pypi.org/simple/}
BASE=debian:bookworm-slim
# Images are tagged by what they are built from: a changed stats.py or
# Dockerfile makes new ones.
TAG=$(cat images/cache/*Dockerfile images/cache/*.sh images/cache/*.py images/cache/*.conf | sha256sum | cut -c1-12)
APT_IMAGE=testfleet/cache-apt:$TAG
PYPI_IMAGE=testfleet/cache-pypi:$TAG

has_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
running() { [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }

build() {
  exec 9>/tmp/testfleet-cache-images.lock
  flock 9
  has_image "$BASE" || scripts/runner-images.sh pytest >/dev/null
  if ! has_image "$APT_IMAGE"; then
    log "building $APT_IMAGE"
    "$DOCKER" build -q -t "$APT_IMAGE" -t testfleet/cache-apt:latest -f images/cache/apt.Dockerfile images/cache >/dev/null
  fi
  if ! has_image "$PYPI_IMAGE"; then
    log "building $PYPI_IMAGE"
    context=$(mktemp -d)
    cp images/cache/pypi.Dockerfile images/cache/stats.py images/cache/pypi-entry.sh "$context/"
    # The host reaches PyPI; the build downloads nothing itself.
    python3 -m pip download -q -d "$context/wheels" --only-binary=:all: \
      --python-version 3.11 --platform manylinux2014_x86_64 --platform any \
      proxpi==1.3.1 gunicorn==23.0.0
    "$DOCKER" build -q -t "$PYPI_IMAGE" -t testfleet/cache-pypi:latest -f "$context/pypi.Dockerfile" "$context" >/dev/null
    rm -rf "$context"
  fi
}

network() { # name, extra flags
  "$DOCKER" network inspect "$1" >/dev/null 2>&1 || "$DOCKER" network create "${@:2}" "$1" >/dev/null
}

start() { # container, alias, stats port, image, extra run flags
  local container=$1 alias=$2 port=$3 image=$4
  # Kept when it runs the image wanted; replaced when that was rebuilt.
  if running "$container" &&
    [ "$("$DOCKER" inspect -f '{{.Image}}' "$container")" = "$("$DOCKER" image inspect -f '{{.Id}}' "$image")" ]; then
    return
  fi
  "$DOCKER" rm -f "$container" >/dev/null 2>&1 || true
  "$DOCKER" run -d --name "$container" --restart unless-stopped --network "$NAME-up" \
    -p "127.0.0.1:${port/#0/}:3143" "${@:5}" "$image" >/dev/null
  "$DOCKER" network connect --alias "$alias" "$NAME" "$container"
}

stats_port() { "$DOCKER" port "$1" 3143/tcp | head -1 | sed 's/.*://'; }

up() {
  build
  network "$NAME" --internal
  network "$NAME-up"
  start "$NAME-apt" apt-cache "$APT_STATS" "$APT_IMAGE" \
    -v "$NAME-apt:/var/cache/apt-cacher-ng"
  local ca=()
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    # Whatever authorities this host trusts for PyPI, the cache trusts too.
    ca=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
        -e REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt)
  fi
  start "$NAME-pypi" pypi-cache "$PYPI_STATS" "$PYPI_IMAGE" \
    -v "$NAME-pypi:/var/cache/proxpi" -e "PROXPI_INDEX_URL=$PYPI_INDEX" "${ca[@]}"
  local container ready
  for container in "$NAME-apt" "$NAME-pypi"; do
    ready=0
    for _ in $(seq 100); do
      if curl -sf "http://127.0.0.1:$(stats_port "$container")/stats?from_ms=0&to_ms=0" >/dev/null; then
        ready=1
        break
      fi
      sleep 0.1
    done
    if [ "$ready" = 0 ]; then
      log "$container's stats did not answer within 10 s:"
      "$DOCKER" logs --tail 20 "$container" >&2 || true
      exit 1
    fi
  done
  log "up: $NAME (apt stats on $(stats_port "$NAME-apt"), pypi stats on $(stats_port "$NAME-pypi"))"
}

down() {
  "$DOCKER" rm -f "$NAME-apt" "$NAME-pypi" >/dev/null 2>&1 || true
  "$DOCKER" network rm "$NAME" "$NAME-up" >/dev/null 2>&1 || true
}

must_run() {
  if ! running "$NAME-apt" || ! running "$NAME-pypi"; then
    echo "$0: the cache $NAME is not running; start it with: $0 up" >&2
    exit 1
  fi
}

caches() {
  must_run
  echo "apt=http://127.0.0.1:$(stats_port "$NAME-apt"),pypi=http://127.0.0.1:$(stats_port "$NAME-pypi")"
}

config() {
  must_run
  echo "# The cache for a worker and an aggregator on this engine (--config FILE)."
  sed -e '/^#/d' -e "s/^network = .*/network = \"$NAME\"/" images/cache/worker.toml
  cat <<SETTINGS

[aggregator]
caches = ["$(caches | sed 's/,/", "/')"]
SETTINGS
}

case "${1:-up}" in
  build) build ;;
  up) up ;;
  down) down ;;
  config) config ;;
  caches) caches ;;
  *) echo "usage: $0 build|up|down|config|caches" >&2; exit 2 ;;
esac
