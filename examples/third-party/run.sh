#!/usr/bin/env bash
# A real third-party suite through the fleet: the tests of `six` 1.16.0, from its
# PyPI sdist, one container per test on 3 workers × 2 slots, compared with running
# pytest over the same suite serially in one container of the same image. Prints
# both times and exits non-zero unless the two agree on every test's pass/fail.
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
docker run --rm --network none "$IMAGE" "${PYTEST[@]}" -v test_six.py >"$work/serial.log" 2>&1 || true
serial_ms=$(( $(now_ms) - started ))

log "fleet: one container per test, 3 workers × 2 slots"
source scripts/lib/fleet.sh
fleet_start third-party 3 2
started=$(now_ms)
set +e
"$bin/testfleet-producer" --suite six --image "$IMAGE" --timeout 60 --wait \
  --preset pytest \
  --discover "docker run --rm --network none $IMAGE ${PYTEST[*]} --collect-only -q test_six.py" \
  --report-dir "$work/reports" -- "${PYTEST[@]}" -q "{id}" >"$work/producer.out" 2>"$work/producer.log"
code=$?
set -e
fleet_ms=$(( $(now_ms) - started ))
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
attempts = sum(len(t["attempts"]) for t in report["tests"])
if not serial or serial != fleet:
    only = sorted(set(serial) ^ set(fleet))[:10]
    differ = sorted(k for k in set(serial) & set(fleet) if serial[k] != fleet[k])[:10]
    sys.exit(f"pass/fail sets differ: {len(serial)} serial, {len(fleet)} fleet; "
             f"listed on one side only: {only}; outcome differs: {differ}")
passed = sum(1 for v in serial.values() if v == "pass")
print(f"== same pass/fail set: {len(serial)} tests, {passed} passing, {len(serial) - passed} failing")
# Each attempt is one fresh container (the Docker executor's only mode here).
print(f"== {attempts} containers for {len(fleet)} tests")
PY
log "time: serial $(secs "$serial_ms") s (one container, one pytest), fleet $(secs "$fleet_ms") s (one container per test)" \
  | tee "$work/times.txt"
