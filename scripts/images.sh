#!/usr/bin/env bash
# Builds the images compose.yaml runs, idempotently, with nothing pulled:
#   debian:bookworm-slim        a local base (mmdebstrap | docker import), if missing;
#   testfleet/rabbitmq:latest   RabbitMQ from Debian's package (images/rabbitmq);
#   testfleet/testfleet:latest  the binaries cargo built on the host (images/testfleet);
# each rebuilt whenever what it is made of (its folder, the binaries) changed.
# Usage: scripts/images.sh [--rebuild]   (--rebuild: rebuild the two testfleet/* images)
# The binaries come from target/debug, or from $TESTFLEET_BIN_DIR (e.g. target/release);
# run `cargo build --workspace --bins` first. The test images (testfleet/busybox,
# testfleet/examples) are scripts/setup.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[images] %s\n' "$*" >&2; }

rebuild=0
case "${1:-}" in
  --rebuild) rebuild=1 ;;
  "") ;;
  *) echo "usage: $0 [--rebuild]" >&2; exit 2 ;;
esac

DOCKER=/usr/bin/docker  # Debian's client matches its engine (see setup.sh)
[ -x "$DOCKER" ] || DOCKER=docker
BASE=debian:bookworm-slim
BINARIES_IMAGE=${TESTFLEET_IMAGE:-testfleet/testfleet:latest}
RABBITMQ_IMAGE=testfleet/rabbitmq:latest
bin_dir=${TESTFLEET_BIN_DIR:-target/debug}
binaries=(testfleet-producer testfleet-worker testfleet-aggregator)

# Parallel tests (and people) may call this at once: one build at a time, and the
# second caller then finds the images made.
exec 9>/tmp/testfleet-images.lock
flock 9

if ! command -v docker-compose >/dev/null || ! command -v mmdebstrap >/dev/null; then
  log "installing docker-compose and mmdebstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose mmdebstrap >/dev/null
fi

has_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
timed() { # what, command...: runs the command and logs how long it took
  local what=$1 started=$SECONDS; shift
  "$@"
  log "$what took $((SECONDS - started)) s"
}

if ! has_image "$BASE"; then
  log "making $BASE with mmdebstrap"
  timed "$BASE" sh -c "mmdebstrap --quiet --variant=minbase bookworm - | $DOCKER import - $BASE >/dev/null"
fi

# Each image carries a hash of what it was built from (label testfleet.source), so
# a stale one is noticed and rebuilt: after a change to its folder, and for the
# binaries' image after every `cargo build` that changed them.
source_hash() { sha256sum "$@" | sed 's/ .*//' | sha256sum | cut -c1-16; }
is_current() { # image, hash
  [ "$rebuild" = 0 ] && [ "$("$DOCKER" image inspect -f '{{index .Config.Labels "testfleet.source"}}' "$1" 2>/dev/null)" = "$2" ]
}

hash=$(source_hash images/rabbitmq/*)
if ! is_current "$RABBITMQ_IMAGE" "$hash"; then
  log "building $RABBITMQ_IMAGE"
  timed "$RABBITMQ_IMAGE" "$DOCKER" build -q --label "testfleet.source=$hash" \
    -t "$RABBITMQ_IMAGE" images/rabbitmq >/dev/null
else
  log "$RABBITMQ_IMAGE is up to date ($hash)"
fi

for b in "${binaries[@]}"; do
  [ -x "$bin_dir/$b" ] || { log "$bin_dir/$b is missing: run \`cargo build --workspace --bins\` first"; exit 1; }
done
hash=$(source_hash images/testfleet/Dockerfile "${binaries[@]/#/$bin_dir/}")
if ! is_current "$BINARIES_IMAGE" "$hash"; then
  log "building $BINARIES_IMAGE from $bin_dir ($hash)"
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  cp images/testfleet/Dockerfile "$context/"
  # Debug info is most of a debug binary's size; symbols stay for backtraces.
  for b in "${binaries[@]}"; do strip --strip-debug -o "$context/$b" "$bin_dir/$b"; done
  timed "$BINARIES_IMAGE" "$DOCKER" build -q --label "testfleet.source=$hash" \
    -t "$BINARIES_IMAGE" "$context" >/dev/null
else
  log "$BINARIES_IMAGE is up to date ($hash)"
fi
