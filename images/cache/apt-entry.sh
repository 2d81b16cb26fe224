#!/bin/sh
# apt-cacher-ng in the foreground, its stats beside it.
set -e
mkdir -p /var/cache/apt-cacher-ng /var/log/apt-cacher-ng
chown -R apt-cacher-ng:apt-cacher-ng /var/cache/apt-cacher-ng /var/log/apt-cacher-ng
touch /var/log/apt-cacher-ng/apt-cacher.log
python3 /stats.py apt /var/log/apt-cacher-ng/apt-cacher.log &
exec /usr/sbin/apt-cacher-ng -c /etc/apt-cacher-ng ForeGround=1
