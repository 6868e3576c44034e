"""A generated Visium HD-like dataset: Space Ranger 3 binned outputs over a tiled, pyramidal H&E TIFF.

Built like the demo: each section is a tissue of compartments (tumour, stroma, immune
infiltrate, adipose) drawn from smooth random fields; the image shows them through colour and
nuclei density, and each bin's counts follow the compartment under it through shared gene
programs, plus a smooth spatial field, at HD depth (tens of UMIs per 8 um bin). Every bin of a
square lattice lies on tissue. 8 um bins are the lattice; 16 um bins are sums of 2 x 2 of them,
as Space Ranger bins them, so one dataset gives both sizes (`reader_options.bin_um`). Counts and
the image are written block by block: a 400,000-bin section never sits whole in memory. Fixed
seeds make every file the same on every machine.

    python -m spahgc_kedro.demo_hd --out data/01_raw/visium_hd_demo --bins 400000
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from spahgc_kedro.demo import _BASE, _NUCLEUS, _NUCLEUS_DENSITY, COMPARTMENTS, _smooth_field

logger = logging.getLogger(__name__)

BIN_UM = 8
MICRONS_PER_PIXEL = 0.5
MARGIN_PX = 64
TILE_PX = 256
SECTIONS = ("HD1", "HD2", "HD3", "HD4")
# mean UMIs of the generated genes per 8 um bin (Visium HD 8 um bins hold tens to a few hundred)
DEPTH = 40.0


def lattice_side(bins: int) -> int:
    """Side of the square lattice of about `bins` 8 um bins: even, so 16 um bins tile it exactly."""
    return 2 * int(round(np.sqrt(bins) / 2))


def gene_programs(rng: np.random.Generator, n_genes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Compartment loadings [4, G], spatial-field loadings, baseline log-rates and gene names."""
    owner = np.arange(n_genes) % (len(COMPARTMENTS) + 1)
    loadings = rng.uniform(0.0, 0.6, (len(COMPARTMENTS), n_genes))
    markers = owner < len(COMPARTMENTS)
    loadings[owner[markers], np.flatnonzero(markers)] += rng.uniform(1.5, 3.0, markers.sum())
    names = [f"{COMPARTMENTS[o][:3].upper() if o < len(COMPARTMENTS) else 'MIX'}{g:04d}" for g, o in enumerate(owner)]
    return loadings, rng.normal(0.0, 0.35, n_genes), rng.uniform(-2.5, 0.5, n_genes), names


def compartments(rng: np.random.Generator, side: int) -> np.ndarray:
    """Compartment of each 8 um bin of a `side` x `side` lattice [side, side] (smooth, curved borders)."""
    from scipy.ndimage import zoom

    low = max(4, side // 24)
    fields = np.stack([_smooth_field(rng, (low, low), 2.0) for _ in COMPARTMENTS]).astype(np.float32)
    fields[3] -= 0.6  # adipose is the rarest compartment
    return zoom(fields, (1, side / low, side / low), order=1)[:, :side, :side].argmax(0).astype(np.int8)


def bin_counts(
    labels: np.ndarray, field: np.ndarray, programs: tuple, rng: np.random.Generator, block_rows: int = 32
) -> Any:
    """CSR counts [side * side, G] of the 8 um bins in row-major order, drawn `block_rows` lattice rows at a time."""
    import scipy.sparse as sp

    loadings, spatial, baseline, _ = programs
    rates = np.exp(baseline + loadings)  # [4, G]: a compartment's rates at field 0
    rates *= DEPTH / rates.sum(axis=1, keepdims=True).mean()
    blocks = []
    for r0 in range(0, labels.shape[0], block_rows):
        rows = labels[r0 : r0 + block_rows].ravel()
        rate = rates[rows] * np.exp(np.outer(field[r0 : r0 + block_rows].ravel(), spatial))
        blocks.append(sp.csr_matrix(rng.poisson(rate).astype(np.int32)))
    return sp.vstack(blocks, format="csr")


def sixteen_um(counts_8um: Any, side: int) -> Any:
    """Counts of the 16 um bins [(side // 2) ** 2, G]: each the sum of its 2 x 2 block of 8 um bins (row-major)."""
    import scipy.sparse as sp

    half = side // 2
    rows, cols = np.divmod(np.arange(side * side), side)
    keep = (rows < 2 * half) & (cols < 2 * half)
    parent = (rows // 2) * half + cols // 2
    pool = sp.csr_matrix(
        (np.ones(keep.sum(), dtype=np.int32), (parent[keep], np.flatnonzero(keep))), shape=(half * half, side * side)
    )
    return (pool @ counts_8um).tocsr()


def write_10x_h5(path: Path, counts: Any, genes: list[str], barcodes: list[str]) -> None:
    """Counts [bins, G] (CSR) as a Cell Ranger 3 feature-barcode matrix: CSC over barcodes, feature metadata."""
    import h5py

    with h5py.File(path, "w") as h5:
        matrix = h5.create_group("matrix")
        matrix.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        matrix.create_dataset("data", data=counts.data.astype(np.int32), compression="gzip", compression_opts=1)
        matrix.create_dataset("indices", data=counts.indices.astype(np.int64), compression="gzip", compression_opts=1)
        matrix.create_dataset("indptr", data=counts.indptr.astype(np.int64))
        matrix.create_dataset("shape", data=np.array([len(genes), len(barcodes)], dtype=np.int32))
        features = matrix.create_group("features")
        features.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        features.create_dataset("id", data=np.array([f"GENERATED{g:05d}" for g in range(len(genes))], dtype="S"))
        features.create_dataset("name", data=np.array(genes, dtype="S"))
        features.create_dataset("feature_type", data=np.array([b"Gene Expression"] * len(genes)))
        features.create_dataset("genome", data=np.array([b"GRCh38"] * len(genes)))


def write_bins(outs: Path, counts: Any, genes: list[str], side: int, bin_um: int) -> None:
    """One `binned_outputs/square_<NNN>um` folder: matrix, bin positions (parquet) and scale factors."""
    import pandas as pd

    folder = outs / "binned_outputs" / f"square_{bin_um:03d}um"
    (folder / "spatial").mkdir(parents=True, exist_ok=True)
    bin_px = bin_um / MICRONS_PER_PIXEL
    rows, cols = np.divmod(np.arange(side * side), side)
    barcodes = [f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)]
    pd.DataFrame(
        {
            "barcode": barcodes,
            "in_tissue": np.ones(side * side, dtype=np.int32),
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": MARGIN_PX + (rows + 0.5) * bin_px,
            "pxl_col_in_fullres": MARGIN_PX + (cols + 0.5) * bin_px,
        }
    ).to_parquet(folder / "spatial" / "tissue_positions.parquet", index=False)
    scale = {"spot_diameter_fullres": bin_px, "bin_size_um": float(bin_um), "microns_per_pixel": MICRONS_PER_PIXEL}
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scale, indent=2))
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, genes, barcodes)


def render_tile(labels: np.ndarray, y0: int, x0: int, shape: tuple[int, int], step: int, seed: int) -> np.ndarray:
    """RGB pixels [h, w, 3] of a window at pyramid downsampling `step` (level-0 origin y0, x0): compartment colour,
    nuclei as dark pixels at the compartment's density (blended below level 0), grain noise."""
    rng = np.random.default_rng(seed)
    bin_px = BIN_UM / MICRONS_PER_PIXEL
    ys = (y0 + (np.arange(shape[0]) + 0.5) * step - MARGIN_PX) // bin_px
    xs = (x0 + (np.arange(shape[1]) + 0.5) * step - MARGIN_PX) // bin_px
    inside = ((ys >= 0) & (ys < labels.shape[0]))[:, None] & ((xs >= 0) & (xs < labels.shape[1]))[None, :]
    label = labels[np.clip(ys, 0, labels.shape[0] - 1).astype(int)][:, np.clip(xs, 0, labels.shape[1] - 1).astype(int)]
    density = _NUCLEUS_DENSITY[label]
    if step == 1:
        nuclei = (rng.random(shape) < density)[..., None]
        pixels = np.where(nuclei, _NUCLEUS[label], _BASE[label])
    else:
        pixels = _BASE[label] * (1 - density[..., None]) + _NUCLEUS[label] * density[..., None]
    pixels += rng.normal(0.0, 6.0, (*shape, 1))
    pixels[~inside] = (246, 244, 246)  # glass
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_image(path: Path, labels: np.ndarray, seed: int, levels: int = 4) -> tuple[int, int]:
    """A tiled, zlib-compressed pyramidal TIFF (level 0 plus `levels - 1` halvings) drawn tile by tile; its (h, w)."""
    import tifffile

    bin_px = int(BIN_UM / MICRONS_PER_PIXEL)
    height, width = (2 * MARGIN_PX + labels.shape[0] * bin_px, 2 * MARGIN_PX + labels.shape[1] * bin_px)

    def tiles(step: int):
        h, w = -(-height // step), -(-width // step)
        for ty in range(0, h, TILE_PX):
            for tx in range(0, w, TILE_PX):
                shape = (min(TILE_PX, h - ty), min(TILE_PX, w - tx))
                tile = np.zeros((TILE_PX, TILE_PX, 3), dtype=np.uint8)
                tile[: shape[0], : shape[1]] = render_tile(
                    labels, ty * step, tx * step, shape, step, seed * 7919 + step * 104729 + ty * 31 + tx
                )
                yield tile

    options = {"tile": (TILE_PX, TILE_PX), "photometric": "rgb", "compression": "zlib", "compressionargs": {"level": 1}}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(tiles(1), shape=(height, width, 3), dtype=np.uint8, subifds=levels - 1, **options)
        for level in range(1, levels):
            step = 2**level
            shape = (-(-height // step), -(-width // step), 3)
            tif.write(tiles(step), shape=shape, dtype=np.uint8, subfiletype=1, **options)
    return height, width


def generate_visium_hd(
    dest: str | Path, bins: int = 400_000, n_genes: int = 300, sections: tuple[str, ...] = SECTIONS, seed: int = 11
) -> Path:
    """Write `sections` of about `bins` 8 um bins each (and their 16 um bins) in Space Ranger 3's layout under `dest`."""
    from spahgc_kedro.progress import progress

    dest = Path(dest)
    side = lattice_side(bins)
    programs = gene_programs(np.random.default_rng(seed), n_genes)
    for index, section in enumerate(progress(sections, desc="generated Visium HD sections", unit="section")):
        rng = np.random.default_rng(seed * 1000 + index)
        labels = compartments(rng, side)
        field = _smooth_field(rng, (side, side), side / 10)
        counts = bin_counts(labels, field, programs, rng)
        outs = dest / section / "outs"
        write_bins(outs, counts, programs[3], side, BIN_UM)
        write_bins(outs, sixteen_um(counts, side), programs[3], side // 2, 2 * BIN_UM)
        write_image(dest / section / f"{section}_tissue_image.tif", labels, seed * 1000 + index)
    (dest / "genes.txt").write_text("\n".join(programs[3]) + "\n")
    logger.info("Generated %d Visium HD-like sections of %d x %d 8 um bins in %s", len(sections), side, side, dest)
    return dest


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (raw_dir of dataset visium_hd)")
    parser.add_argument("--bins", type=int, default=400_000, help="8 um bins per section (16 um: a quarter)")
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--sections", type=int, default=len(SECTIONS))
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"'{args.out}' is not empty: choose a new folder (nothing is overwritten).")
    names = tuple(f"HD{i + 1}" for i in range(args.sections))
    return generate_visium_hd(args.out, args.bins, args.genes, names)


if __name__ == "__main__":
    main()
