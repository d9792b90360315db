#!/usr/bin/env bash
# The image test alone (tests/image, marker `image`): build the Dockerfile's operator target with
# rootful podman on a debootstrap Debian bookworm base and run it against the API emulator.
# Root on Debian/Ubuntu; installs podman, runc and debootstrap when missing. The first run takes
# ~4 min (debootstrap ~2.5 min, host wheels + podman build ~1 min); a rerun with an unchanged build
# context ~15 s (both images are cached by content hash). pytest arguments pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
# the sandbox refuses podman's default rlimits, and runc is the runtime installed here
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/tests/image/containers.conf}"
[ -x .venv/bin/pytest ] || bash scripts/setup.sh dev,operator
.venv/bin/pytest -m image tests/image "$@"
