"""A fleet cache's hits and misses over a time window, read from the cache's
own records, served as JSON on port 3143:

    GET /stats?from_ms=A&to_ms=B -> {"name", "kind", "package_hits",
        "package_misses", "index_requests", "bytes_served", "bytes_fetched"}

apt (apt-cacher-ng's apt-cacher.log, lines `time|type|size|client|path`):
a package (`.deb`) handed to a client is an `O` line, one fetched from
upstream an `I` line; per path, as many of its `O` lines as it has `I`
lines are misses, the rest hits. Other paths are index requests.

pypi (proxpi behind gunicorn): each 200 GET of a distribution file
(`/index/<project>/<file>`) in the access log is a request; each file that
entered the cache directory in the window is a miss, the other requests
hits.

Standard library only; times are the cache's clock, in whole seconds.
"""

import collections
import http.server
import json
import os
import re
import sys
import urllib.parse
from datetime import datetime

KIND = sys.argv[1]
SOURCE = sys.argv[2]
CACHE_DIR = sys.argv[3] if len(sys.argv) > 3 else None
PORT = 3143


def apt(from_s, to_s):
    served = collections.Counter()
    fetched = collections.Counter()
    counts = dict(package_hits=0, package_misses=0, index_requests=0,
                  bytes_served=0, bytes_fetched=0)
    with open(SOURCE, errors="replace") as log:
        for line in log:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 5 or not parts[0].isdigit() or not parts[2].isdigit():
                continue
            if not from_s <= int(parts[0]) <= to_s:
                continue
            kind, size, path = parts[1], int(parts[2]), parts[4]
            if kind == "I":
                counts["bytes_fetched"] += size
                fetched[path] += 1
            elif kind == "O":
                counts["bytes_served"] += size
                if path.endswith((".deb", ".udeb")):
                    served[path] += 1
                else:
                    counts["index_requests"] += 1
    for path, times in served.items():
        misses = min(times, fetched[path])
        counts["package_misses"] += misses
        counts["package_hits"] += times - misses
    return counts


# gunicorn's default access log: host - - [07/Dec/2026:06:00:00 +0000] "GET /path HTTP/1.1" 200 123 ...
ACCESS = re.compile(r'\[([^\]]+)\] "GET (\S+) [^"]*" (\d{3}) (\d+|-)')


def pypi(from_s, to_s):
    counts = dict(package_hits=0, package_misses=0, index_requests=0,
                  bytes_served=0, bytes_fetched=0)
    requests = 0
    with open(SOURCE, errors="replace") as log:
        for line in log:
            found = ACCESS.search(line)
            if not found or found.group(3) != "200":
                continue
            when = datetime.strptime(found.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
            if not from_s <= when <= to_s:
                continue
            size = int(found.group(4)) if found.group(4).isdigit() else 0
            counts["bytes_served"] += size
            path = found.group(2).split("?")[0]
            if path.startswith("/index/") and path.count("/") >= 3 and not path.endswith("/"):
                requests += 1
            else:
                counts["index_requests"] += 1
    misses = 0
    for root, _, files in os.walk(CACHE_DIR or "/nonexistent"):
        for name in files:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:  # gone since the walk listed it
                continue
            if from_s <= stat.st_mtime <= to_s:
                misses += 1
                counts["bytes_fetched"] += stat.st_size
    counts["package_misses"] = min(misses, requests)
    counts["package_hits"] = requests - counts["package_misses"]
    return counts


class Stats(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path != "/stats":
            self.send_error(404)
            return
        try:
            from_s = int(query["from_ms"][0]) // 1000
            to_s = -(-int(query["to_ms"][0]) // 1000)
        except (KeyError, ValueError):
            self.send_error(400, "from_ms and to_ms, Unix milliseconds")
            return
        counts = (apt if KIND == "apt" else pypi)(from_s, to_s)
        body = json.dumps(dict(name=KIND, kind=KIND, **counts)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Stats).serve_forever()
