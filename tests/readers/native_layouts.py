"""Writers of tiny native-layout fixtures shared by the reader tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SIZE = (200, 150)  # width, height


def write_image(path: Path, size: tuple[int, int] = IMAGE_SIZE) -> Path:
    """A small RGB image, TIFF or JPEG by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), 200, dtype=np.uint8)
    if path.suffix in {".tif", ".tiff", ".btf"}:
        import tifffile

        tifffile.imwrite(path, pixels, photometric="rgb")
    else:
        from PIL import Image

        Image.fromarray(pixels).save(path)
    return path


def spot_table(n: int = 6) -> pd.DataFrame:
    """Space Ranger spot table: n in-tissue spots on a 2-row grid, plus one spot off tissue."""
    rows = [(f"BC{i:02d}-1", 1, i % 2, i // 2 * 2 + i % 2, 30.0 + 40.0 * (i % 2), 20.0 + 25.0 * i) for i in range(n)]
    rows.append(("OFF-1", 0, 5, 5, 10.0, 10.0))
    return pd.DataFrame(
        rows,
        columns=["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"],
    )


def write_positions(path: Path, table: pd.DataFrame, header: bool) -> Path:
    """Write a Space Ranger spot table with or without its header line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, header=header)
    return path


def write_mtx(folder: Path, counts: np.ndarray, genes: list[str], barcodes: list[str], gz: bool = False) -> Path:
    """10x matrix folder; `counts` is spots x genes, written genes x spots as 10x does."""
    import scipy.io
    import scipy.sparse as sp

    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.mmwrite(folder / "matrix.mtx", sp.coo_matrix(counts.T))
    pd.DataFrame({"id": [f"ENSG{i:05d}" for i in range(len(genes))], "name": genes, "type": "Gene Expression"}).to_csv(
        folder / "features.tsv", sep="\t", header=False, index=False
    )
    pd.Series(barcodes).to_csv(folder / "barcodes.tsv", sep="\t", header=False, index=False)
    if gz:
        for name in ("matrix.mtx", "features.tsv", "barcodes.tsv"):
            plain = folder / name
            with gzip.open(f"{plain}.gz", "wb") as out:
                out.write(plain.read_bytes())
            plain.unlink()
    return folder


def write_10x_h5(path: Path, counts: np.ndarray, genes: list[str], barcodes: list[str]) -> Path:
    """Space Ranger v3 filtered_feature_bc_matrix.h5; `counts` is spots x genes."""
    import h5py
    import scipy.sparse as sp

    path.parent.mkdir(parents=True, exist_ok=True)
    matrix = sp.csc_matrix(counts.T.astype(np.int32))  # genes x spots, stored by spot
    with h5py.File(path, "w") as f:
        # the file-level attributes Space Ranger writes (scanpy.read_visium reads library_ids)
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["library_ids"] = np.array([path.parent.parent.name.encode()])
        f.attrs["chemistry_description"] = "Spatial 3' v1"
        f.attrs["software_version"] = "spaceranger-2.1.0"
        group = f.create_group("matrix")
        group["data"], group["indices"], group["indptr"] = matrix.data, matrix.indices, matrix.indptr
        group["shape"] = np.array(matrix.shape, dtype=np.int32)
        group["barcodes"] = np.array(barcodes, dtype="S")
        features = group.create_group("features")
        features["id"] = np.array([f"ENSG{i:05d}" for i in range(len(genes))], dtype="S")
        features["name"] = np.array(genes, dtype="S")
        features["feature_type"] = np.array(["Gene Expression"] * len(genes), dtype="S")
        features["genome"] = np.array(["GRCh38"] * len(genes), dtype="S")
    return path


COUNTS = np.arange(24, dtype=np.int64).reshape(6, 4) + 1  # 6 spots x 4 genes, all distinct
GENES = ["ERBB2", "ESR1", "KRT5", "CD3E"]
BARCODES = [f"BC{i:02d}-1" for i in range(6)]


def write_cscc(raw: Path, counts: pd.DataFrame, spots: pd.DataFrame, section: str = "P2_ST_rep1") -> tuple[Path, Path]:
    """Write one cSCC section as GEO GSE144240 ships it (count table, spot table, image); returns the two tables."""
    raw.mkdir(parents=True, exist_ok=True)
    counts_path = raw / f"GSM4284316_{section}_stdata.tsv.gz"
    spots_path = raw / f"GSM4284316_spot_data-selection-{section}.tsv.gz"
    counts.to_csv(counts_path, sep="\t")
    spots.to_csv(spots_path, sep="\t", index=False)
    write_image(raw / f"GSM4284316_{section}.jpg")
    return counts_path, spots_path
