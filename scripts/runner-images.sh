#!/usr/bin/env bash
# Builds, if missing, a plain image of each runner the presets know, from
# Debian's packages on the local Debian base (mmdebstrap: nothing is pulled):
#   testfleet/runner-pytest, testfleet/runner-go, testfleet/runner-rspec,
#   testfleet/runner-nextest (cargo-nextest copied from this machine).
# The preset tests (tests/it/presets.rs) build their tiny suites on them, so
# each preset runs in a container the way a user's image would run it.
# Usage: scripts/runner-images.sh [pytest|go|rspec|nextest...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[runner-images] %s\n' "$*" >&2; }
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker
BASE=debian:bookworm-slim
runners=("$@")
[ ${#runners[@]} -gt 0 ] || runners=(pytest go rspec nextest)

# Parallel tests call this at once: one build at a time.
exec 9>/tmp/testfleet-runner-images.lock
flock 9

has_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
if ! has_image "$BASE"; then
  command -v mmdebstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
  }
  log "making $BASE with mmdebstrap"
  mmdebstrap --quiet --variant=minbase bookworm - | "$DOCKER" import - "$BASE" >/dev/null
fi

for runner in "${runners[@]}"; do
  image=testfleet/runner-$runner
  has_image "$image" && continue
  context=$(mktemp -d)
  cp "images/runners/$runner/Dockerfile" "$context/"
  if [ "$runner" = nextest ]; then
    cp "$(command -v cargo-nextest)" "$context/cargo-nextest"
  fi
  log "building $image"
  started=$SECONDS
  "$DOCKER" build -q -t "$image" "$context" >/dev/null
  rm -rf "$context"
  log "$image took $((SECONDS - started)) s"
done
