#!/usr/bin/env bash
# Copy the generated CRDs (crds/, from `nexrl-operator crds`) into the Helm chart, which must ship
# them unchanged; CRDs removed from crds/ are removed from the chart. tests/helm checks the copy.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=helm/nexrl-operator/crds
mkdir -p "$dest"
find "$dest" -maxdepth 1 -name '*.yaml' -type f -delete
cp crds/*.yaml "$dest"/
ls "$dest"
