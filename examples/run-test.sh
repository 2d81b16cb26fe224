#!/bin/sh
# Plays one example test, chosen by its id ($1). Each kind of test shows one thing
# testfleet does: passing, failing, flaky (fails on the first attempt only),
# timing out, and chatty (more output than the capture keeps).
id="$1"
case "$id" in
  pass/*)
    echo "running $id"; sleep 0.2; echo ok ;;
  fail/*)
    echo "running $id"
    echo "assertion failed: expected 42, got 41 ($id)" >&2
    exit 1 ;;
  flaky/*)
    echo "attempt ${TESTFLEET_ATTEMPT} of $id"
    if [ "${TESTFLEET_ATTEMPT}" = 1 ]; then echo "connection reset by peer" >&2; exit 1; fi
    echo ok ;;
  timeout/*)
    echo "running $id, which never ends"; sleep 3600 ;;
  chatty/*)
    i=0
    while [ $i -lt 60000 ]; do echo "line $i of a very chatty test: lorem ipsum dolor sit amet, consectetur"; i=$((i+1)); done
    echo done ;;
  *)
    echo "unknown example test: $id" >&2; exit 2 ;;
esac
