# Sourced: builds, if missing, an image holding a PyPI project's test suite
# from its sdist (checked against a pinned SHA-256) on the local Debian base
# (made with mmdebstrap: nothing is pulled), with Debian's Python, pytest and
# the Debian packages asked for; its WORKDIR is the suite. None of the
# project's code is committed here: the sdist is downloaded into target/pypi.
#
#   pypi_suite_image NAME==VERSION SHA256 IMAGE [DEBIAN_PACKAGE...]

pypi_suite_image() {
  local spec=$1 sha=$2 image=$3
  shift 3
  local docker=${DOCKER:-docker}
  "$docker" image inspect "$image" >/dev/null 2>&1 && return 0
  if ! "$docker" image inspect debian:bookworm-slim >/dev/null 2>&1; then
    printf '== making the Debian base image (mmdebstrap)\n' >&2
    mmdebstrap --quiet --variant=minbase bookworm - | "$docker" import - debian:bookworm-slim >/dev/null
  fi
  local cache=${root:-$PWD}/target/pypi/$spec
  mkdir -p "$cache"
  if ! ls "$cache"/*.tar.gz >/dev/null 2>&1; then
    printf '== downloading the %s sdist from PyPI\n' "$spec" >&2
    python3 -m pip download -q --no-deps --no-binary :all: -d "$cache" "$spec"
  fi
  local sdist
  sdist=$(ls "$cache"/*.tar.gz | head -1)
  echo "$sha  $sdist" | sha256sum -c --quiet
  local context=$cache/context
  rm -rf "$context"; mkdir -p "$context/unpacked"
  tar xzf "$sdist" -C "$context/unpacked"
  mv "$context"/unpacked/*/ "$context/suite"
  cat >"$context/Dockerfile" <<DOCKERFILE
FROM debian:bookworm-slim
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-pytest $* \\
 && rm -rf /var/lib/apt/lists/*
COPY suite/ /suite/
WORKDIR /suite
DOCKERFILE
  printf '== building %s\n' "$image" >&2
  "$docker" build -q -t "$image" "$context" >/dev/null
}
