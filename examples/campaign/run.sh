#!/usr/bin/env bash
# Reverse-dependency CI in one command: "does libfoo 2.0 break what depends
# on it?" Builds a small apt repository twice (libfoo 1.0 in base/, 2.0 in
# cand/, the same dependents in both: repos.py), an image of each pointing
# apt at its repository, starts the fleet's package cache in front of them
# (scripts/cache.sh) and a fleet of two workers, lists libfoo's reverse
# dependencies from base/Packages (--rdeps-of, two levels deep) and runs an
# A/B campaign of "does it install and run" over them through the cache.
# Prints the comparison, regressions first; exits 0 when it is the expected
# one (three regressions, one fix, one failing on both sides, one passing).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

scripts/setup.sh
cargo build --quiet --workspace --bins
bin=$root/target/debug
work=$root/target/campaign
rm -rf "$work"; mkdir -p "$work"
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker

echo "== building the repositories and the two images"
python3 examples/campaign/repos.py "$work/repos"
for side in base cand; do
  "$DOCKER" build -q -t "testfleet-example/campaign-$side" - >/dev/null <<DOCKERFILE
FROM debian:bookworm-slim
RUN rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* \
 && echo 'deb [trusted=yes] http://examplerepo/$side ./' > /etc/apt/sources.list
DOCKERFILE
done

echo "== starting the package cache, with the repositories as its upstream"
export TESTFLEET_CACHE_NAME=testfleet-campaign TESTFLEET_CACHE_APT_STATS=0 TESTFLEET_CACHE_PYPI_STATS=0
repo=$TESTFLEET_CACHE_NAME-repo
source scripts/lib/fleet.sh
cache_down() {
  "$DOCKER" rm -f "$repo" >/dev/null 2>&1 || true
  scripts/cache.sh down
  # An emptied cache each time: the repositories are rebuilt, with new
  # files under the same names.
  "$DOCKER" volume rm "$TESTFLEET_CACHE_NAME-apt" "$TESTFLEET_CACHE_NAME-pypi" >/dev/null 2>&1 || true
}
campaign_stop() {
  if [ -n "${TESTFLEET_BROKER__PREFIX:-}" ]; then fleet_stop; fi
  cache_down
}
trap campaign_stop EXIT
cache_down
scripts/cache.sh up
"$DOCKER" rm -f "$repo" >/dev/null 2>&1 || true
# HTTP/1.1: apt-cacher-ng keeps its upstream connections open and
# pipelines on them, which a server that closes after each answer breaks.
"$DOCKER" run -d --name "$repo" --network "$TESTFLEET_CACHE_NAME-up" --network-alias examplerepo \
  -v "$work/repos:/repo:ro" testfleet/cache-apt:latest \
  python3 -m http.server --protocol HTTP/1.1 80 -d /repo >/dev/null
for _ in $(seq 100); do
  "$DOCKER" exec "$repo" python3 -c \
    'import urllib.request; urllib.request.urlopen("http://127.0.0.1/base/Packages")' 2>/dev/null && break
  sleep 0.1
done
scripts/cache.sh config >"$work/cache.toml"
TESTFLEET_AGGREGATOR__CACHES=$(scripts/cache.sh caches)
export TESTFLEET_AGGREGATOR__CACHES

fleet_start campaign 2 2 --config "$work/cache.toml"
# fleet_start sets its own trap: stop the cache too.
trap campaign_stop EXIT

echo "== libfoo's reverse dependencies, two levels deep"
"$bin/testfleet-producer" --rdeps-of libfoo --deps "$work/repos/base/Packages" --depth 2 --list |
  tee "$work/ids.txt"

echo "== A/B: libfoo 1.0 (baseline) against 2.0 (candidate), each id installed and run"
set +e
# apt and dpkg need these capabilities of root inside the container. The
# signature rules make a fetch the cache could not make (its 503) the
# fleet's error, retried, not the package's failure.
TESTFLEET_RUN__CAP_ADD=CHOWN,DAC_OVERRIDE,FOWNER,FSETID,SETGID,SETUID \
  "$bin/testfleet-producer" --rdeps-of libfoo --deps "$work/repos/base/Packages" --depth 2 \
  --baseline-image testfleet-example/campaign-base --image testfleet-example/campaign-cand \
  --confirm 2 --network cache --timeout 120 --wait --report-dir "$work/reports" \
  --config examples/signatures.toml \
  -- sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$0" && "$0"' '{id}' \
  2>"$work/producer.log" | tee "$work/producer.out"
code=${PIPESTATUS[0]}
set -e

run_id=$(head -1 "$work/producer.out")
classes=$(python3 - "$work/reports/$run_id/report.json" <<'PY' || true
import json, sys
comparison = json.load(open(sys.argv[1]))["comparison"]
print(" ".join(sorted(f"{t['id']}={t['class']}" for t in comparison["tests"])))
PY
)
expected="app-greeter=passing app-loud=regressed app-pinned=regressed app-shouter=regressed app-stale=failing app-waver=fixed"
echo "== classes: $classes"
if [ "$code" -eq 1 ] && [ "$classes" = "$expected" ]; then
  echo "== as expected: libfoo 2.0 breaks app-shouter, app-loud and app-pinned (exit 1); reports in $work/reports/$run_id"
  exit 0
fi
echo "== unexpected (exit code $code, expected 1; classes expected: $expected); logs in $work" >&2
for log in producer.log aggregator.log; do
  echo "== the last lines of $log:" >&2
  tail -n 30 "$work/$log" >&2 || true
done
exit 1
