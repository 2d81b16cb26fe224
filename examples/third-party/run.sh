#!/usr/bin/env bash
# A real third-party suite through the fleet: the tests of `six` 1.16.0, from its
# PyPI sdist, run with the one-line command (`--preset pytest --image …`: listed
# inside the image, batched, each test's result from pytest's JUnit report) on
# 2 workers × 2 slots, twice (the second run has the first's history), compared
# with running pytest over the same suite serially in one container of the same
# image. Prints the times and exits non-zero unless the second run and pytest
# alone agree on every test's pass/fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

SDIST=six-1.16.0
SHA256=1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926
IMAGE=testfleet/six:1.16.0
PYTEST=(python3 -m pytest -p no:cacheprovider)

log() { printf '== %s\n' "$*"; }

scripts/setup.sh
[ -n "${TESTFLEET_SKIP_BUILD:-}" ] || cargo build --quiet --workspace --bins
bin=${TESTFLEET_BIN_DIR:-$root/target/debug}
cache=$root/target/third-party
work=$cache/run
rm -rf "$work"; mkdir -p "$work" "$cache"

if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  log "making the Debian base image (mmdebstrap, about 15 s)"
  mmdebstrap --quiet --variant=minbase bookworm - | docker import - debian:bookworm-slim >/dev/null
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  if [ ! -s "$cache/$SDIST.tar.gz" ]; then
    log "downloading the $SDIST sdist from PyPI"
    python3 -m pip download -q --no-deps --no-binary :all: -d "$cache" "${SDIST/-/==}"
  fi
  echo "$SHA256  $cache/$SDIST.tar.gz" | sha256sum -c --quiet
  rm -rf "$cache/context"; mkdir -p "$cache/context"
  tar xzf "$cache/$SDIST.tar.gz" -C "$cache/context"
  mv "$cache/context/$SDIST" "$cache/context/suite"
  cp examples/third-party/Dockerfile "$cache/context/"
  log "building $IMAGE"
  docker build -q -t "$IMAGE" "$cache/context" >/dev/null
fi

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { printf '%d.%01d' $(($1 / 1000)) $(($1 % 1000 / 100)); }

log "serial: pytest over the whole suite in one container"
started=$(now_ms)
docker run --rm --network none "$IMAGE" "${PYTEST[@]}" -v >"$work/serial.log" 2>&1 || true
serial_ms=$(( $(now_ms) - started ))

log "fleet: the one-line run, batched, 2 workers × 2 slots, twice"
source scripts/lib/fleet.sh
fleet_start third-party 2 2
one_line_run() { # report folder → sets code and ms
  local started; started=$(now_ms)
  set +e
  "$bin/testfleet-producer" --suite six --image "$IMAGE" --timeout 60 --wait \
    --preset pytest --report-dir "$1" >"$1.out" 2>"$1.log"
  code=$?
  set -e
  ms=$(( $(now_ms) - started ))
}
one_line_run "$work/first"
first_ms=$ms
log "first run (no history): exit $code, $(secs "$first_ms") s"
one_line_run "$work/reports"
fleet_ms=$ms
fleet_stop
log "fleet verdict: exit $code (details in $work)"

# Skipped tests exit 0 when run alone, so they count as passing on both sides.
# A test that is flaky in the fleet (failed, then passed) differs from one that
# passed serially: it points at a difference of isolation, so it is no match.
python3 - "$work/serial.log" "$work/reports" <<'PY'
import json, pathlib, re, sys
serial = {}
for line in open(sys.argv[1]):
    m = re.match(r"^(\S+::\S+) (PASSED|SKIPPED|XFAIL|FAILED|ERROR|XPASS)", line)
    if m:
        serial[m[1]] = "pass" if m[2] in ("PASSED", "SKIPPED", "XFAIL") else "fail"
report = json.loads(next(pathlib.Path(sys.argv[2]).glob("*/report.json")).read_text())
verdict = {"Passed": "pass", "Flaky": "flaky"}
fleet = {t["id"]: verdict.get(t["status"], "fail") for t in report["tests"]}
# A container per batch, and one per attempt run alone (a retry).
alone = sum(1 for t in report["tests"] for a in t["attempts"] if not a.get("batch"))
containers = len(report.get("batches", [])) + alone
if not serial or serial != fleet:
    only = sorted(set(serial) ^ set(fleet))[:10]
    differ = sorted(k for k in set(serial) & set(fleet) if serial[k] != fleet[k])[:10]
    sys.exit(f"pass/fail sets differ: {len(serial)} serial, {len(fleet)} fleet; "
             f"listed on one side only: {only}; outcome differs: {differ}")
passed = sum(1 for v in serial.values() if v == "pass")
print(f"== same pass/fail set: {len(serial)} tests, {passed} passing, {len(serial) - passed} failing")
print(f"== {containers} containers for {len(fleet)} tests")
PY
log "time: serial $(secs "$serial_ms") s (one container, one pytest), fleet $(secs "$fleet_ms") s (second run, batched; first $(secs "$first_ms") s)" \
  | tee "$work/times.txt"
