#!/usr/bin/env bash
# A Python base image made from Debian's packages only, for building the Dockerfile's operator
# target where no image registry is reachable (tests/image):
#   bash docker/debian-python.sh [TAG]          (root; needs debootstrap and podman)
#   podman build --target operator --build-arg PYTHON_IMAGE=TAG ...
# Debian bookworm minbase + python3 (3.11) + a venv at /opt/python first on PATH, so that `pip
# install` works as in the python:*-slim images (bookworm's own python3 refuses it: PEP 668).
set -euo pipefail
tag=${1:-localhost/debian-python:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d "${TMPDIR:-/var/tmp}/debian-python.XXXXXX")
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$mirror"
chroot "$root" python3 -m venv /opt/python  # pip from the stdlib's ensurepip: no download
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$tag"
