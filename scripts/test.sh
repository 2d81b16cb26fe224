#!/usr/bin/env bash
# The whole test suite: makes the machine ready (Docker, RabbitMQ, local images),
# checks formatting and lints, builds the binaries the end-to-end tests start, and
# runs every unit and integration test against the real broker and engine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/setup-runners.sh
scripts/runner-images.sh
cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
scripts/check-structure.py
# Node.js checks: the Kubernetes manifests against their schemas (and the
# dashboard's browser test, which tests/it starts), from tests/node's lockfile.
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
node tests/node/validate-manifests.mjs
cargo build --quiet --workspace --bins
# Tests in `disruptive::` restart the broker or the Docker engine that every test
# shares, so they run last, alone, one at a time. `third_party::` runs 200
# containers of Python, and `cluster::` three more RabbitMQ nodes: alone, they
# neither slow the others nor are slowed by them, nor does `campaign::` (two
# workers, a package cache and a repository behind it, six containers at once).
serial='test(/^disruptive::/) | test(/^third_party::/) | test(/^cluster::/) | test(/^campaign::/)'
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast -E "not ($serial)"
  cargo nextest run -p testfleet-tests --no-fail-fast -j 1 -E "$serial"
else
  cargo test --workspace --no-fail-fast -- --skip disruptive:: --skip third_party:: --skip cluster:: --skip campaign::
  cargo test -p testfleet-tests --test it --no-fail-fast -- --test-threads 1 disruptive:: third_party:: cluster:: campaign::
fi
