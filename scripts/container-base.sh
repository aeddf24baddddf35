#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base (python:3.11-slim-bookworm) where no container
# registry is reachable: Debian bookworm's own Python 3.11 and pip, bootstrapped with
# debootstrap from Debian's mirror and imported into podman's local storage. Used by
# tests/deploy/test_image.py (podman build --build-arg BASE=...). As in the official image,
# pip may install into the system Python (Debian's PEP 668 marker is removed) and `python`
# is Python 3.
# Does nothing when the image is already in podman's storage: the cache between runs.
#   scripts/container-base.sh [IMAGE]      (root; default localhost/mox-base:python3.11-bookworm)
set -euo pipefail
image=${1:-localhost/mox-base:python3.11-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if podman image exists "$image"; then
  exit 0
fi
root=$(mktemp -d /var/tmp/mox-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log" "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*
tar -C "$root" -c . | podman import --quiet \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$image" >/dev/null
echo "built $image" >&2
