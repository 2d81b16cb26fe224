#!/usr/bin/env bash
# Installs, if missing, the test runners that the discovery-preset tests list real
# projects with: pytest (PyPI), RSpec and Go (Debian packages). cargo-nextest comes
# with the machine's Rust toolchain.
set -euo pipefail

log() { printf '[setup-runners] %s\n' "$*" >&2; }

packages=()
command -v rspec >/dev/null || packages+=(ruby-rspec)
command -v go >/dev/null || packages+=(golang-go)
if [ ${#packages[@]} -gt 0 ]; then
  log "installing ${packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
if ! python3 -m pytest --version >/dev/null 2>&1; then
  log "installing pytest"
  python3 -m pip install -q --root-user-action=ignore pytest
fi
command -v cargo-nextest >/dev/null || log "cargo-nextest missing: the nextest preset test will fail"
