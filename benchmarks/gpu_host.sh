#!/usr/bin/env bash
# The GPU-host benchmarks in one go, from the repository root of an offline GPU host that has
# benchmarks/gpu_bundle.sh's folder installed (eval "$(bash BUNDLE/install.sh BUNDLE)"):
#
#   benchmarks/gpu_host.sh BUNDLE [RESULTS=gpu-results] [FRAMES=500]
#
# 1. the host (GPU, CPUs) and an import check; 2. a smoke `anonray run` on the clip (stops here if it
# fails, printing the error rows); 3. benchmarks/nvdec.py (CPU decode against NVDEC); 4.
# benchmarks/throughput.py in GPU host mode: nproc parallel libx264 transcodes against one anonray run
# over as many copies of the clip looped to FRAMES frames (the same work), deface left out; 5.
# benchmarks/passthrough.py (the encode stage with and without smart passthrough). JSON results go to RESULTS.
set -uo pipefail
BUNDLE=${1:?usage: gpu_host.sh BUNDLE [RESULTS] [FRAMES]}
RESULTS=${2:-gpu-results}; FRAMES=${3:-500}
mkdir -p "$RESULTS"
export ANONRAY_CACHE=${ANONRAY_CACHE:-/tmp/anonray-cache} PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$ANONRAY_CACHE" && tar xJf "$BUNDLE/extra/models.tar.xz" -C "$ANONRAY_CACHE"
CLIP=$(ls "$BUNDLE"/extra/*.mp4 | head -1)
step() { echo; echo "=== $* ($(date -u +%T))"; }

step host
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "cpus: $(nproc)"
python3 -c "import torch, ray, av, ultralytics, lap, onnx2torch, pydantic; from anonray.detect.frame_detector import default_device
print('torch', torch.__version__, 'ray', ray.__version__, 'av', av.__version__, 'device', default_device())" || exit 1

step smoke run
if ! python3 -m anonray run "$CLIP" --output /tmp/anonray-smoke > "$RESULTS/smoke.log" 2>&1; then
  tail -40 "$RESULTS/smoke.log"
  python3 -c "import pyarrow.parquet as pq; [print(r) for r in pq.read_table('/tmp/anonray-smoke/_anonray/videos').select(['status','error_class','error_message']).to_pylist()]"
  exit 1
fi
tail -5 "$RESULTS/smoke.log"
python3 -c "import pyarrow.parquet as pq; r=pq.read_table('/tmp/anonray-smoke/_anonray/videos').to_pylist()[0]
print({k: v for k, v in r.items() if k.startswith('seconds_') or k in ('status', 'frames_out', 'detect_device')})"

step nvdec
python3 benchmarks/nvdec.py --input "$CLIP" --frames "$FRAMES" --json "$RESULTS/nvdec.json"

step throughput
# CPU jiffies (/proc/stat) and GPU utilisation every 2 s while it runs: where the anonray run leaves the host idle
(while :; do echo "$(date +%s.%N) $(head -1 /proc/stat) gpu $(nvidia-smi --query-gpu=utilization.gpu \
  --format=csv,noheader,nounits 2>/dev/null)"; sleep 2; done) > "$RESULTS/utilisation.log" &
sampler=$!
python3 benchmarks/throughput.py --input "$CLIP" --frames "$FRAMES" --skip-deface --json "$RESULTS/throughput.json"
kill $sampler

step passthrough
python3 benchmarks/passthrough.py --input "$CLIP" --repeat 1 --json "$RESULTS/passthrough.json"
step done
