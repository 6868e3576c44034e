"""Visium HD binned-output reader on a hand-written Space Ranger 3 layout with known bins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from native_layouts import write_10x_h5, write_image

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import visium_hd

MICRONS_PER_PIXEL = 0.25
GENES = ["ERBB2", "ESR1", "KRT5"]


def write_bins(
    outs: Path,
    bin_um: int,
    rows: int,
    cols: int,
    off_tissue: tuple[int, int],
    counts: np.ndarray | None = None,
    genes: list[str] = GENES,
) -> pd.DataFrame:
    """One binned_outputs/square_<NNN>um folder as Space Ranger 3 writes it: the 10x h5 matrix, the bin
    positions in parquet (y = pxl_row_in_fullres, x = pxl_col_in_fullres) and the scale factors."""
    folder = outs / "binned_outputs" / f"square_{bin_um:03d}um"
    side_px = bin_um / MICRONS_PER_PIXEL
    grid = [(r, c) for r in range(rows) for c in range(cols)]
    table = pd.DataFrame(
        {
            "barcode": [f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in grid],
            "in_tissue": [0 if (r, c) == off_tissue else 1 for r, c in grid],
            "array_row": [r for r, _ in grid],
            "array_col": [c for _, c in grid],
            "pxl_row_in_fullres": [40.0 + side_px * r for r, _ in grid],
            "pxl_col_in_fullres": [60.0 + side_px * c for _, c in grid],
        }
    )
    (folder / "spatial").mkdir(parents=True)
    table.to_parquet(folder / "spatial" / "tissue_positions.parquet", index=False)
    (folder / "spatial" / "scalefactors_json.json").write_text(
        json.dumps(
            {
                "spot_diameter_fullres": side_px,
                "bin_size_um": float(bin_um),
                "microns_per_pixel": MICRONS_PER_PIXEL,
                "tissue_hires_scalef": 0.1,
            }
        )
    )
    # counts: bin i has i+1, 10(i+1), 100(i+1) of the three genes; the h5 lists the bins in reverse order
    if counts is None:
        counts = np.array([[i + 1, 10 * (i + 1), 100 * (i + 1)] for i in range(len(grid))])
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts[::-1], genes, list(table["barcode"])[::-1])
    return table.assign(counts=list(counts))


@pytest.fixture
def hd_section(tmp_path):
    outs = tmp_path / "HD1" / "outs"
    bins16 = write_bins(outs, 16, rows=3, cols=4, off_tissue=(0, 3))
    bins8 = write_bins(outs, 8, rows=6, cols=8, off_tissue=(5, 7))
    write_image(tmp_path / "HD1" / "HD1_full.tif", size=(400, 300))
    return tmp_path, bins16, bins8


@pytest.mark.parametrize("bin_um", [16, 8])
def test_bins_are_spots_with_their_pixel_positions_and_scale(hd_section, bin_um):
    raw, bins16, bins8 = hd_section
    bins = {16: bins16, 8: bins8}[bin_um]
    assert visium_hd.discover_sections(raw) == ["HD1"]
    adata = visium_hd.read_section(raw, "HD1", bin_um=bin_um)
    kept = bins[bins["in_tissue"] == 1]
    assert sorted(adata.obs_names) == sorted(kept["barcode"])
    by_barcode = kept.set_index("barcode")
    rows = by_barcode.loc[list(adata.obs_names)]
    # x is the image column, y its row
    np.testing.assert_array_equal(adata.obsm["spatial"][:, 0], rows["pxl_col_in_fullres"])
    np.testing.assert_array_equal(adata.obsm["spatial"][:, 1], rows["pxl_row_in_fullres"])
    np.testing.assert_array_equal(adata.X.toarray(), np.stack(rows["counts"]))
    assert list(adata.var_names) == GENES
    side_px = bin_um / MICRONS_PER_PIXEL
    assert adata.uns["microns_per_pixel"] == MICRONS_PER_PIXEL
    assert adata.uns["spot_diameter_px"] == pytest.approx(side_px)
    assert adata.uns["spot_spacing_px"] == pytest.approx(side_px)  # square bins: as wide as apart
    assert adata.uns["platform"] == "visium_hd"


def test_a_missing_bin_size_names_the_folder_and_the_sizes_present(hd_section):
    raw, _, _ = hd_section
    with pytest.raises(InputDataError, match=r"square_002um.*found: square_008um, square_016um.*bin_um"):
        visium_hd.read_section(raw, "HD1", bin_um=2)


def test_a_folder_without_binned_outputs_is_not_a_visium_hd_section(tmp_path):
    (tmp_path / "plain" / "outs" / "spatial").mkdir(parents=True)
    with pytest.raises(InputDataError, match="No Visium HD sections.*binned_outputs"):
        visium_hd.discover_sections(tmp_path)


def test_missing_positions_are_named(hd_section):
    raw, _, _ = hd_section
    (raw / "HD1" / "outs" / "binned_outputs" / "square_016um" / "spatial" / "tissue_positions.parquet").unlink()
    with pytest.raises(InputDataError, match="tissue_positions.parquet"):
        visium_hd.read_section(raw, "HD1")


def write_hd_dataset(raw: Path, sections: int = 4, side: int = 8, n_genes: int = 40) -> Path:
    """Generated Visium HD sections (16 um bins, Poisson counts with spatial gradients) and their images."""
    rng = np.random.default_rng(0)
    genes = [f"GENE{g:02d}" for g in range(n_genes)]
    rows, cols = np.divmod(np.arange(side * side), side)
    for index in range(sections):
        slope = rng.normal(size=(2, n_genes))
        rate = np.exp(1.0 + 0.3 * np.outer(rows / side, slope[0]) + 0.3 * np.outer(cols / side, slope[1]))
        outs = raw / f"HD{index}" / "outs"
        write_bins(outs, 16, side, side, off_tissue=(0, 0), counts=rng.poisson(rate * 5), genes=genes)
        size = int(60 + side * 16 / MICRONS_PER_PIXEL + 60)
        write_image(raw / f"HD{index}" / "full.tif", size=(size, size))
    return raw


@pytest.mark.slow
def test_visium_hd_runs_end_to_end_through_the_cli(project_copy, tmp_path):
    from tests.helpers.project import run_kedro

    raw = write_hd_dataset(tmp_path / "hd_raw")
    tiny = "train.epochs:2,train.model.hidden:16,train.model.heads:2,train.model.n_layers:1"
    result = run_kedro(project_copy, "run", "--params", f"dataset:visium_hd,raw_dir:{raw},{tiny}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    predictions = project_copy / "data" / "07_model_output" / "visium_hd" / "efficientnet_lite0" / "predictions"
    assert sorted(p.stem for p in predictions.glob("*.h5ad")) == ["HD0", "HD1", "HD2", "HD3"]


def test_messages_name_the_file_what_it_is_and_the_fix(hd_section, tmp_path_factory):
    raw, _, _ = hd_section
    folder = raw / "HD1" / "outs" / "binned_outputs" / "square_002um"
    with pytest.raises(InputDataError) as error:
        visium_hd.read_section(raw, "HD1", bin_um=2)
    assert str(error.value) == (
        f"Section HD1 has no 2 um bins: '{folder}' does not exist (found: square_008um, square_016um). Choose a "
        "bin size it has with --params datasets.<name>.reader_options.bin_um:<8|16|...>."
    )
    positions = raw / "HD1" / "outs" / "binned_outputs" / "square_016um" / "spatial" / "tissue_positions.parquet"
    positions.unlink()
    with pytest.raises(InputDataError) as error:
        visium_hd.read_section(raw, "HD1")
    assert (
        str(error.value)
        == f"Missing bin positions of HD1: '{positions}'. Expected layout: {visium_hd.VISIUM_HD_LAYOUT}"
    )
    empty = tmp_path_factory.mktemp("empty")
    (empty / "HD9" / "outs").mkdir(parents=True)
    with pytest.raises(InputDataError, match=r"\(found: nothing\)"):
        visium_hd.read_section(empty, "HD9")
    with pytest.raises(InputDataError) as error:
        visium_hd.discover_sections(empty / "absent")
    assert str(error.value).startswith(f"No Visium HD sections found in '{empty / 'absent'}'. Expected layout: ")


def test_the_scale_is_space_rangers_microns_per_pixel(hd_section):
    raw, _, _ = hd_section
    scale_path = raw / "HD1" / "outs" / "binned_outputs" / "square_016um" / "spatial" / "scalefactors_json.json"
    scale = json.loads(scale_path.read_text())
    # Space Ranger's own value wins over bin size / bin width in pixels (which rounds)
    scale_path.write_text(json.dumps({**scale, "microns_per_pixel": 0.2503}))
    adata = visium_hd.read_section(raw, "HD1")
    assert adata.uns["microns_per_pixel"] == 0.2503
    assert adata.uns["section_id"] == "HD1"
