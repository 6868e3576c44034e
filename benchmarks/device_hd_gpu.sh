#!/usr/bin/env bash
# Issue 14's GPU checks in one prepared run on a lent GPU machine: `bash benchmarks/device_hd_gpu.sh` from the
# repository root, with the wheels of benchmarks/device_wheels.sh in .whl/ (carried with the working tree).
# benchmarks/visium_hd_gpu.py measures UNI's architecture (random weights, bf16) raw and end to end on a generated
# Visium HD pyramidal TIFF, then one training epoch, the test prediction and the retrieval estimate at 100k and
# 400k bins per section. The step has a time limit; the table is rewritten after each part, so a run cut short
# keeps what it measured. Results go to $OUT: summary.log, visium_hd_gpu.{log,md}. At most about 7 min.
set -o pipefail
set -u

OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 ANNDATA_ALLOW_WRITE_NULLABLE_STRINGS=1
exec > >(tee -a "$OUT/summary.log") 2>&1
began=$(date +%s)

echo "== install wheels"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || echo "pip install failed: rc $?"
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi -L
python3 -c "import torch, torch_geometric, timm; print('torch', torch.__version__, '| pyg', torch_geometric.__version__, '| timm', timm.__version__, '| cpus', __import__('os').cpu_count())"

echo "== visium_hd_gpu (limit ${HD_GPU_LIMIT:-400} s)"
timeout --kill-after=15 "${HD_GPU_LIMIT:-400}" python3 -m benchmarks.visium_hd_gpu --out "$OUT/visium_hd_gpu.md" "$@" \
    >"$OUT/visium_hd_gpu.log" 2>&1
echo "== visium_hd_gpu: rc $?, $(( $(date +%s) - began )) s"
grep -E '^\[|FAILED|Error' "$OUT/visium_hd_gpu.log" | tail -n 30
cat "$OUT/visium_hd_gpu.md" 2>/dev/null || echo "no table written"
