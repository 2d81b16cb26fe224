#!/bin/sh
# proxpi under gunicorn in the foreground, its stats beside it.
set -e
mkdir -p "$PROXPI_CACHE_DIR" /var/log/proxpi
touch /var/log/proxpi/access.log
python3 /stats.py pypi /var/log/proxpi/access.log "$PROXPI_CACHE_DIR" &
exec /opt/proxpi/bin/gunicorn --threads 8 -w 1 -b 0.0.0.0:5000 \
  --access-logfile /var/log/proxpi/access.log proxpi.server:app
