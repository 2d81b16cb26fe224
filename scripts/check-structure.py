#!/usr/bin/env python3
"""Structure checks scripts/test.sh runs beside clippy: no crate has an import
circle between its modules, and testfleet-report builds without the AMQP
client. Prints what it finds; exits 1 on a circle or on lapin in the report's
dependencies.

An import is a path through `crate::` or `super::` outside comments and
`#[cfg(test)] mod tests`; a module is a file (`mod.rs` and `lib.rs` are
their folder's module).
"""
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = ["types", "common", "report", "producer", "worker", "aggregator"]
# The aggregator's pure core and its pure parts: no broker client, no async
# runtime, no clock read (ARCHITECTURE.md, "The aggregator's core").
PURE = [
    "aggregator/src/runs.rs",
    "aggregator/src/run_state.rs",
    "aggregator/src/pipeline.rs",
    "aggregator/src/unclaimed.rs",
    "aggregator/src/fleet.rs",
    "aggregator/src/events.rs",
    "aggregator/src/quarantine.rs",
    "worker/src/follows.rs",
    "worker/src/turns.rs",
]
IMPURE = re.compile(r"\b(lapin|tokio)::|\bnow_ms\(\)|SystemTime::now|Instant::now")


def impure_lines(path):
    """Lines of `path`'s code (before its tests) that touch the broker, the
    runtime or the clock."""
    text = open(os.path.join(ROOT, path)).read().split("#[cfg(test)]")[0]
    return [line.strip() for line in text.splitlines() if IMPURE.search(line) and not line.strip().startswith("//")]


def module_of(src, path):
    parts = os.path.relpath(path, src)[:-3].split("/")
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


def imports(src, modules):
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", open(path).read())[0]
        text = "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))
        parent = module.rsplit("::", 1)[0] if "::" in module else ""
        paths = re.findall(r"crate::([a-z_]+(?:::[a-z_]+)*)", text)
        paths += [f"{parent}::{p}" if parent else p for p in re.findall(r"super::([a-z_]+)", text)]
        for p in paths:
            parts = p.split("::")
            for k in range(len(parts), 0, -1):
                target = "::".join(parts[:k])
                if target in modules and target != module and not module.startswith(target + "::"):
                    graph[module].add(target)
                    break
    return graph


def circles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main():
    failed = False
    for crate in CRATES:
        src = os.path.join(ROOT, crate, "src")
        modules = {module_of(src, f): f for f in glob.glob(src + "/**/*.rs", recursive=True)}
        for component in circles(imports(src, modules)):
            print(f"{crate}: an import circle: {' ↔ '.join(component)}")
            failed = True
    tree = subprocess.run(
        ["cargo", "tree", "--quiet", "-p", "testfleet-report", "-e", "normal", "--prefix", "none"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    if re.search(r"^lapin ", tree, re.M):
        print("testfleet-report depends on lapin: it must build on testfleet-types alone")
        failed = True
    for path in PURE:
        for line in impure_lines(path):
            print(f"{path} is pure, yet: {line}")
            failed = True
    if not failed:
        print(f"structure: no import circle in {', '.join(CRATES)}; testfleet-report builds without lapin; "
              f"{len(PURE)} pure modules touch no broker, runtime or clock")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
