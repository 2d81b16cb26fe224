# The fleet's Debian package cache: apt-cacher-ng from Debian's packages,
# and stats.py serving its hits and misses over a time window from its own
# log (scripts/cache.sh builds it; compose.yaml runs it as `cache-apt`).
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends apt-cacher-ng python3 \
 && rm -rf /var/lib/apt/lists/*
COPY acng.conf /etc/apt-cacher-ng/acng.conf
COPY stats.py /stats.py
COPY apt-entry.sh /entry.sh
EXPOSE 3142 3143
CMD ["sh", "/entry.sh"]
