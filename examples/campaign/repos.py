"""Builds the campaign example's two flat apt repositories with dpkg-deb:
the same packages in each, but libfoo 1.0 in base/ and libfoo 2.0 in
cand/, the candidate a change is about to ship.

    python3 repos.py DIR      # makes DIR/base and DIR/cand

libfoo installs tools under /usr/lib/libfoo/. 2.0 drops `shout` and adds
`wave`. Its reverse dependencies, and what 2.0 does to them:

    app-greeter   Depends: libfoo            uses greet        passes on both
    app-shouter   Depends: libfoo            uses shout        regressed
    app-loud      Depends: app-shouter       (depth 2)         regressed
    app-pinned    Depends: libfoo (<< 2.0)   cannot install    regressed
    app-waver     Depends: libfoo            uses wave         fixed
    app-stale     Depends: libfoo            always exits 1    failing on both
    tool-other    no relation to libfoo                        never listed
"""

import hashlib
import os
import shutil
import subprocess
import sys

LIBFOO_TOOLS = {"1.0": ["greet", "shout"], "2.0": ["greet", "wave"]}

APPS = [
    ("app-greeter", "Depends: libfoo\n", "/usr/lib/libfoo/greet"),
    ("app-shouter", "Depends: libfoo\n", "/usr/lib/libfoo/shout"),
    ("app-loud", "Depends: app-shouter\n", "app-shouter"),
    ("app-pinned", "Depends: libfoo (<< 2.0)\n", "/usr/lib/libfoo/greet"),
    ("app-waver", "Depends: libfoo\n", "/usr/lib/libfoo/wave"),
    ("app-stale", "Depends: libfoo\n", "false"),
    ("tool-other", "", "true"),
]


def executable(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as script:
        script.write(text)
    os.chmod(path, 0o755)


def deb(out, name, version, relations, files):
    root = os.path.join(out, "build", name)
    os.makedirs(os.path.join(root, "DEBIAN"))
    with open(os.path.join(root, "DEBIAN", "control"), "w") as control:
        control.write(
            f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
            f"Maintainer: testfleet <example@testfleet.invalid>\n{relations}"
            f"Description: {name}, made by testfleet's campaign example\n"
        )
    for path, text in files.items():
        executable(os.path.join(root, path.lstrip("/")), text)
    target = os.path.join(out, f"{name}_{version}_all.deb")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, target],
                   check=True, capture_output=True)


def index(out):
    packages = subprocess.run(["dpkg-scanpackages", "."], cwd=out,
                              check=True, capture_output=True).stdout
    with open(os.path.join(out, "Packages"), "wb") as listing:
        listing.write(packages)
    digest = hashlib.sha256(packages).hexdigest()
    with open(os.path.join(out, "Release"), "w") as release:
        release.write(
            "Origin: testfleet-example\nLabel: testfleet-example\nSuite: ./\nCodename: ./\n"
            "Date: Thu, 01 Jan 2026 00:00:00 UTC\nArchitectures: all amd64\n"
            f"SHA256:\n {digest} {len(packages)} Packages\n"
        )


def repo(out, libfoo_version):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tools = {f"/usr/lib/libfoo/{tool}": f"#!/bin/sh\necho libfoo {tool}\n"
             for tool in LIBFOO_TOOLS[libfoo_version]}
    deb(out, "libfoo", libfoo_version, "", tools)
    for name, relations, runs in APPS:
        deb(out, name, "1.0", relations, {f"/usr/bin/{name}": f"#!/bin/sh\n{runs}\n"})
    shutil.rmtree(os.path.join(out, "build"))
    index(out)


if __name__ == "__main__":
    repo(os.path.join(sys.argv[1], "base"), "1.0")
    repo(os.path.join(sys.argv[1], "cand"), "2.0")
