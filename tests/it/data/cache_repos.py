"""Builds the small package repositories the cache tests put behind the
fleet's caches: a flat apt repository of .debs made here with dpkg-deb, and
a PEP 503 Python index of wheels made here with zipfile.

    python3 cache_repos.py DIR

apt (DIR/apt, served at the root of http://aptrepo/): libfoo 1.0, app-a
(Depends: libfoo), app-b (Depends: libfoo | libfoo-compat), app-c
(Depends: foo-provider, which libfoo provides), app-broken (Depends:
libmissing). Each app installs /usr/bin/<name>, which prints its name.

pypi (DIR/pypi/simple/): pkg-a 1.0 (Requires-Dist: pkg-b), pkg-b 1.0,
pkg-broken 1.0 (Requires-Dist: pkg-missing).
"""

import base64
import hashlib
import os
import subprocess
import sys
import zipfile

DEBS = [
    ("libfoo", "Provides: foo-provider\n"),
    ("app-a", "Depends: libfoo (>= 1.0)\n"),
    ("app-b", "Depends: libfoo | libfoo-compat\n"),
    ("app-c", "Depends: foo-provider\n"),
    ("app-broken", "Depends: libmissing\n"),
]

WHEELS = [
    ("pkg_a", "Requires-Dist: pkg-b\n"),
    ("pkg_b", ""),
    ("pkg_broken", "Requires-Dist: pkg-missing\n"),
]


def deb(out, name, relations):
    root = os.path.join(out, "build", name)
    os.makedirs(os.path.join(root, "DEBIAN"), exist_ok=True)
    os.makedirs(os.path.join(root, "usr", "bin"), exist_ok=True)
    with open(os.path.join(root, "DEBIAN", "control"), "w") as control:
        control.write(
            f"Package: {name}\nVersion: 1.0\nArchitecture: all\n"
            f"Maintainer: testfleet <tests@testfleet.invalid>\n{relations}"
            f"Description: {name}, made by the cache tests\n"
        )
    program = os.path.join(root, "usr", "bin", name)
    with open(program, "w") as script:
        script.write(f"#!/bin/sh\necho {name} works\n")
    os.chmod(program, 0o755)
    target = os.path.join(out, f"{name}_1.0_all.deb")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, target],
                   check=True, capture_output=True)


def apt_repo(out):
    os.makedirs(out, exist_ok=True)
    for name, relations in DEBS:
        deb(out, name, relations)
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=out,
                              check=True, capture_output=True).stdout
    with open(os.path.join(out, "Packages"), "wb") as index:
        index.write(packages)
    digest = hashlib.sha256(packages).hexdigest()
    with open(os.path.join(out, "Release"), "w") as release:
        release.write(
            "Origin: testfleet\nLabel: testfleet\nSuite: ./\nCodename: ./\n"
            "Date: Thu, 01 Jan 2026 00:00:00 UTC\nArchitectures: all amd64\n"
            f"SHA256:\n {digest} {len(packages)} Packages\n"
        )
    subprocess.run(["rm", "-rf", os.path.join(out, "build")], check=True)


def record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def wheel(out, name, requires):
    project = name.replace("_", "-")
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": f"NAME = {project!r}\n".encode(),
        f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n{requires}").encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: testfleet\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(record_line(path, data) for path, data in files.items())
    record += f"{dist}/RECORD,,\n"
    file_name = f"{name}-1.0-py3-none-any.whl"
    project_dir = os.path.join(out, "simple", project)
    os.makedirs(project_dir, exist_ok=True)
    path = os.path.join(project_dir, file_name)
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
        archive.writestr(f"{dist}/RECORD", record)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    with open(os.path.join(project_dir, "index.html"), "w") as page:
        page.write(f'<!DOCTYPE html><html><body><a href="{file_name}#sha256={sha}">{file_name}</a></body></html>\n')
    return project


def python_index(out):
    projects = [wheel(out, name, requires) for name, requires in WHEELS]
    links = "".join(f'<a href="{p}/">{p}</a>\n' for p in projects)
    with open(os.path.join(out, "simple", "index.html"), "w") as page:
        page.write(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")


if __name__ == "__main__":
    apt_repo(os.path.join(sys.argv[1], "apt"))
    python_index(os.path.join(sys.argv[1], "pypi"))
