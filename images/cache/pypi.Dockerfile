# The fleet's PyPI cache: proxpi (from PyPI, under gunicorn), and stats.py
# serving its hits and misses over a time window (scripts/cache.sh builds
# it; compose.yaml runs it as `cache-pypi`). PROXPI_INDEX_URL names the
# upstream index (PyPI by default); a slow download is waited for rather
# than redirected upstream, which a container on the cache network could
# not follow.
# The wheels are downloaded by scripts/cache.sh on the host (which reaches
# PyPI) into the build context's wheels/.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY wheels /wheels
RUN python3 -m venv /opt/proxpi \
 && /opt/proxpi/bin/pip install --no-cache-dir --no-index --find-links /wheels proxpi gunicorn \
 && rm -rf /wheels
COPY stats.py /stats.py
COPY pypi-entry.sh /entry.sh
ENV PROXPI_CACHE_DIR=/var/cache/proxpi PROXPI_DOWNLOAD_TIMEOUT=600
EXPOSE 5000 3143
CMD ["sh", "/entry.sh"]
