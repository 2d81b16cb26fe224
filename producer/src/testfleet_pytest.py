"""testfleet's pytest preset: list and run node ids the way the suite runs.

`python3 -c "<this file>" --list [pytest args...]` prints, after a header
line, the node id of every test the suite's plain collection makes, then the
node id of every file or folder that failed to collect (so that the run
reports its collection error instead of losing its tests); pytest's own
output goes to stderr, whatever the suite's `addopts` say.

Run as `python3 -c "<this file>" IDS_FILE REPORT [pytest args...]`: pytest
collects as the suite's own plain run does (its conftest collectors, its
ini file, its rootdir), never told the ids on its command line, and this
plugin keeps the items whose node id is in IDS_FILE (one per line) and
deselects the rest, the way pytest-xdist and ci-queue select. Passed as
arguments, a node id would be collected as pytest collects a path given to
it (a data file a conftest collects becomes a module to import), which is
not how the suite runs.

Collection is pruned to the paths of the wanted ids, so a batch imports
only the files it runs. A wanted id that is not collected gets a line of
its own: the collection error of the file (or folder) that holds it, or
"not collected". REPORT gets one JSON object per line and per test (`id`,
`outcome`, `duration_s`, `output`, `message`), written as each test ends,
so a runner that crashes mid-batch leaves the lines of the tests before.
"""

import contextlib
import json
import os
import sys

import pytest

PYTEST_MAJOR = int(pytest.__version__.split(".")[0])
# pytest's exit codes for an internal error and a usage error.
STOPPED_BEFORE_TESTS = (3, 4)
# The listing's first line, which tells it from pytest's own output.
LISTING_HEADER = "# testfleet: pytest node ids"


def _path_of(node_id):
    """The file or folder part of a node id: what comes before its first `::`."""
    return node_id.split("::", 1)[0]


def _within(node_id, collector_id):
    """Whether `node_id` is `collector_id` or collected under it."""
    if not collector_id:
        return True
    return node_id == collector_id or node_id.startswith(
        (collector_id + "::", collector_id + "/")
    )


def _run_here(config):
    """xdist (`addopts = -n auto`) would collect and run in workers that never
    load this plugin: everything runs in this process instead."""
    if getattr(config.option, "dist", "no") != "no" or getattr(
        config.option, "numprocesses", None
    ):
        config.option.dist = "no"
        config.option.numprocesses = 0


class Listing:
    """Keeps the collected node ids and the collectors that failed."""

    def __init__(self):
        self.ids = []
        self.failed = []

    def pytest_configure(self, config):
        _run_here(config)

    def pytest_collectreport(self, report):
        if report.failed and report.nodeid:
            self.failed.append(report.nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        self.ids = [item.nodeid for item in items]


def list_tests(args):
    listing = Listing()
    with contextlib.redirect_stdout(sys.stderr):
        code = pytest.main(
            ["--collect-only", "--continue-on-collection-errors", *args], plugins=[listing]
        )
    if int(code) in STOPPED_BEFORE_TESTS:
        return code
    print(LISTING_HEADER)
    seen = set(listing.ids)
    for node_id in listing.ids + [f for f in listing.failed if f not in seen]:
        print(node_id)
    return 0


class Select:
    """Keeps the wanted items, reports each, attributes what was not collected."""

    def __init__(self, ids_file, report):
        with open(ids_file, encoding="utf-8") as ids:
            self.wanted = [line.rstrip("\n") for line in ids if line.strip()]
        self.wanted_set = set(self.wanted)
        self.report = open(report, "w", encoding="utf-8")
        self.collect_errors = []
        self.phases = {}
        self.files = set()
        self.folders = set()
        for node_id in self.wanted:
            path = _path_of(node_id).rstrip("/")
            self.files.add(path)
            parts = path.split("/")
            for end in range(len(parts)):
                self.folders.add("/".join(parts[:end]))
        self.prune = None
        self.lines = 0

    def _write(self, node_id, outcome, duration_s, output, message):
        line = _line(node_id, outcome, duration_s, output, message)
        self.report.write(json.dumps(line) + "\n")
        self.report.flush()
        self.lines += 1

    def _relative(self, config, path):
        try:
            return os.path.relpath(str(path), str(config.rootpath)).replace(os.sep, "/")
        except ValueError:
            return None

    def pytest_configure(self, config):
        _run_here(config)
        # Prune only when every wanted id names a path that exists: ids a
        # plugin makes up without a file must still be collected.
        root = str(config.rootpath)
        self.prune = all(os.path.exists(os.path.join(root, f)) for f in self.files)

    def _ignored(self, config, path):
        if not self.prune:
            return None
        relative = self._relative(config, path)
        if relative is None or relative.startswith(".."):
            return None
        if relative in self.files or relative in self.folders:
            return None
        # A package's __init__.py makes its Package node (pytest 7 asks
        # about it): kept wherever a wanted id lies below it.
        folder, _, name = relative.rpartition("/")
        if name == "__init__.py" and folder in self.folders:
            return None
        # A file or folder inside a wanted one (an id naming a folder).
        parts = relative.split("/")
        if any("/".join(parts[:end]) in self.files for end in range(1, len(parts))):
            return None
        return True

    if PYTEST_MAJOR >= 7:

        def pytest_ignore_collect(self, collection_path, config):
            return self._ignored(config, collection_path)

    else:

        def pytest_ignore_collect(self, path, config):
            return self._ignored(config, path)

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors.append((report.nodeid, str(report.longrepr)))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        selected, deselected = [], []
        for item in items:
            (selected if item.nodeid in self.wanted_set else deselected).append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = selected
        collected = {item.nodeid for item in selected}
        for node_id in self.wanted:
            if node_id not in collected:
                self._not_collected(node_id)

    def _not_collected(self, node_id):
        for collector, error in self.collect_errors:
            if _within(node_id, collector):
                where = collector or "the session"
                message = f"collection error in {where}: {_last_line(error)}"
                self._write(node_id, "failed", 0.0, error, message)
                return
        self._write(node_id, "failed", 0.0, "", "not collected: pytest found no test with this id")

    def pytest_runtest_logreport(self, report):
        phases = self.phases.setdefault(report.nodeid, [])
        phases.append(report)
        if report.when == "teardown":
            self._finish(report.nodeid, self.phases.pop(report.nodeid))

    def _finish(self, node_id, reports):
        failed = [r for r in reports if r.failed]
        skipped = [r for r in reports if r.skipped]
        duration = sum(r.duration for r in reports)
        if failed:
            output = "\n".join(_text(r) for r in failed)
            message = _crash_message(failed[0])
            self._write(node_id, "failed", duration, output, message)
        elif skipped:
            wasxfail = getattr(skipped[0], "wasxfail", None)
            reason = f"xfail: {wasxfail}" if wasxfail is not None else _skip_reason(skipped[0])
            self._write(node_id, "skipped", duration, "", f"skipped: {reason}")
        else:
            self._write(node_id, "passed", duration, "", None)

    def pytest_unconfigure(self, config):
        # A test whose teardown never came (an interrupt) has no line: the
        # fleet runs it again.
        self.report.close()


def _line(node_id, outcome, duration_s, output, message):
    return {
        "id": node_id,
        "outcome": outcome,
        "duration_s": duration_s,
        "output": output,
        "message": message,
    }


def _text(report):
    sections = "".join(f"\n--- {name} ---\n{content}" for name, content in report.sections)
    return report.longreprtext + sections


def _crash_message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or _last_line(report.longreprtext)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if report.when == "call" else f"{report.when}: {first}"


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _skip_reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
    return _last_line(str(longrepr))


def main(argv):
    if argv[:1] == ["--list"]:
        return list_tests(argv[1:])
    if len(argv) < 2:
        sys.exit("usage: IDS_FILE REPORT [pytest args...]")
    select = Select(argv[0], argv[1])
    code = pytest.main(argv[2:], plugins=[select])
    select.report.close()
    if int(code) in STOPPED_BEFORE_TESTS and not select.lines:
        # pytest stopped before collecting (a conftest that fails to import,
        # a bad option): every test of the batch ends so, as it would alone.
        with open(argv[1], "a", encoding="utf-8") as report:
            for node_id in select.wanted:
                message = f"pytest stopped before running tests (exit code {int(code)}); see the batch log"
                report.write(json.dumps(_line(node_id, "failed", 0.0, "", message)) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
