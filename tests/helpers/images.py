"""Generated H&E-like images (plain, locatable, tiled pyramidal TIFF) and a section over one."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def coordinate_image(width: int, height: int) -> np.ndarray:
    """RGB image whose pixel (x, y) is (x % 251, y % 251, (x // 251 + 7 * (y // 251)) % 256): every pixel is locatable."""
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    return np.stack([xs % 251, ys % 251, (xs // 251 + 7 * (ys // 251)) % 256], axis=-1).astype(np.uint8)


def tissue_like_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth pink/purple blobs on white, so patches differ the way H&E patches do."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 16 + 2, width // 16 + 2, 3))
    big = np.kron(small, np.ones((16, 16, 1)))[:height, :width]
    base = np.array([230, 150, 200]) * big + np.array([255, 255, 255]) * (1 - big)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def write_tiled_tiff(path: Path, pixels: np.ndarray, tile: int = 64) -> Path:
    """A tiled, two-level pyramidal TIFF like a HEST WSI."""
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(pixels, tile=(tile, tile), subifds=1, photometric="rgb", compression="zlib")
        tif.write(pixels[::2, ::2], tile=(tile, tile), subfiletype=1, photometric="rgb", compression="zlib")
    return path


def image_section(image_path: Path, centres: np.ndarray, section_id: str = "S1", microns_per_pixel: float = 0.5):
    """A standard section (docs/design.md section 1) with given spot centres and image."""
    import anndata as ad
    import scipy.sparse as sp

    n = len(centres)
    adata = ad.AnnData(X=sp.csr_matrix(np.ones((n, 3), dtype=np.float32)))
    adata.obs_names = [f"spot{i}" for i in range(n)]
    adata.var_names = ["G1", "G2", "G3"]
    adata.obsm["spatial"] = np.asarray(centres, dtype=np.float64)
    adata.uns.update(
        section_id=section_id,
        image_path=str(Path(image_path).resolve()),
        microns_per_pixel=microns_per_pixel,
    )
    return adata
