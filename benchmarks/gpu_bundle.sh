#!/usr/bin/env bash
# Build the folder that carries what an offline GPU host (x86-64, Python 3.12 with CUDA torch, no network)
# lacks to run benchmarks/gpu_host.sh: ray, av, ultralytics, lap, onnx2torch (the workplace's gpu-host
# pack.sh), pydantic and omegaconf, the model files of the default configuration (from this machine's
# verified model cache) and the benchmark clip. It must stay under the 64 MiB a device call carries, so
# av's extension modules are stripped of debug info (26 -> 5 MB), ray's packages anonray never imports
# (serve, tune, train, llm, the dashboard's web client) are left out, and wheels travel unpacked in xz.
#
# Usage, from the repository root:  benchmarks/gpu_bundle.sh [DEST=.gpu-bundle] [CLIP]
# On the host:  eval "$(bash DEST/install.sh DEST)" && benchmarks/gpu_host.sh DEST
set -euo pipefail
DEST=${1:-.gpu-bundle}
CLIP=${2:-../shared/data/videos/street_faces_1080p.mp4}
PACK=${GPU_HOST_PACK:-../shared/gpu-host}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$DEST"; DEST=$(cd "$DEST" && pwd)
# av as CI and this machine run it (the pack default, 19.x, takes other open() arguments)
[ -f "$DEST/ray.tar.xz" ] && [ -f "$DEST/av.tar.xz" ] || AV_VERSION=${AV_VERSION:-18.1.0} "$PACK/pack.sh" "$DEST"
cp "$PACK/install.sh" "$DEST/"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$DEST/.slimmed" ]; then
  mkdir -p "$tmp/av" "$tmp/ray"
  tar xJf "$DEST/av.tar.xz" -C "$tmp/av"
  find "$tmp/av/av" -name '*.so' -exec strip --strip-unneeded {} +
  (cd "$tmp/av" && tar cf - . | xz -T0 -9 > "$DEST/av.tar.xz")
  tar xJf "$DEST/ray.tar.xz" -C "$tmp/ray"
  rm -rf "$tmp"/ray/ray/{serve,tune,train,llm} "$tmp/ray/ray/dashboard/client"
  (cd "$tmp/ray" && tar cf - . | xz -T0 -9 > "$DEST/ray.tar.xz")
  touch "$DEST/.slimmed"
fi

# small wheels the host lacks, pinned to what this machine's venv runs; the big wheels travel unpacked, in xz
if [ ! -f "$DEST/wheels.tar.xz" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing_extensions==4.16.0 omegaconf==2.4.0 antlr4-python3-runtime==4.13.2
  mkdir -p "$tmp/whl"
  for w in "$DEST"/{pydantic_core,lap,ultralytics-}*.whl; do unzip -q -o "$w" -d "$tmp/whl" && rm "$w"; done
  (cd "$tmp/whl" && tar cf - . | xz -T0 -9 > "$DEST/wheels.tar.xz")
fi

# the default configuration's model files, from the local cache (checked against the manifest there)
"$PY" - "$tmp/models" <<'EOF'
import shutil, sys
from pathlib import Path
from anonray.config import Config
from anonray.detect.selection import models_in_use
from anonray.detect.models import cache_dir, model_path
out = Path(sys.argv[1])
for name in models_in_use(Config()):
    src = model_path(name)
    dst = out / src.relative_to(cache_dir())
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    print("model", name, src.stat().st_size, file=sys.stderr)
EOF
mkdir -p "$DEST/extra"  # beside, not in, the folder install.sh unpacks
(cd "$tmp/models" && tar cf - . | xz -T0 -9 > "$DEST/extra/models.tar.xz")
cp "$CLIP" "$DEST/extra/"
du -sh "$DEST"; ls -l "$DEST"
