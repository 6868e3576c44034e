"""Xenium cells pooled into pseudo-spots, on a hand-written Xenium folder whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from native_layouts import write_10x_h5, write_image

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import xenium

# H&E pixel -> Xenium pixel, as Xenium Explorer's alignment CSV holds it: 1 H&E pixel = 2 Xenium pixels
ALIGNMENT = np.array([[2.0, 0.0, 100.0], [0.0, 2.0, 50.0], [0.0, 0.0, 1.0]])
GENES = ["ERBB2", "ESR1", "KRT5"]
# cell id -> (x, y) in microns
CELLS = {"c0": (10.0, 10.0), "c1": (20.0, 30.0), "c2": (60.0, 10.0), "c3": (10.0, 70.0), "c4": (35.0, 45.0)}


def cell_counts() -> np.ndarray:
    return np.array([[i + 1, 10 * (i + 1), 100 * (i + 1)] for i in range(len(CELLS))])


def write_xenium(folder: Path, alignment: bool = True) -> Path:
    """cells.parquet (microns), cell_feature_matrix.h5 (cells listed in reverse), the H&E and its alignment."""
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "cell_id": list(CELLS),
            "x_centroid": [x for x, _ in CELLS.values()],
            "y_centroid": [y for _, y in CELLS.values()],
            "transcript_counts": cell_counts().sum(axis=1),
        }
    ).to_parquet(folder / "cells.parquet", index=False)
    write_10x_h5(folder / "cell_feature_matrix.h5", cell_counts()[::-1], GENES, list(CELLS)[::-1])
    write_image(folder / "section_he_image.ome.tif", size=(300, 300))
    write_image(folder / "morphology_focus.ome.tif", size=(50, 50))
    if alignment:
        np.savetxt(folder / "section_he_imagealignment.csv", ALIGNMENT, delimiter=",")
    return folder


def he_pixels(xy_um: np.ndarray) -> np.ndarray:
    """Microns -> Xenium pixels (0.2125 um) -> H&E pixels through the inverse alignment, by hand."""
    xenium_px = np.asarray(xy_um) / 0.2125
    return (xenium_px - [100.0, 50.0]) / 2.0


def test_square_pseudo_spots_sum_their_cells_at_the_grid_centre(tmp_path):
    write_xenium(tmp_path / "X1")
    assert xenium.discover_sections(tmp_path) == ["X1"]
    adata = xenium.read_section(tmp_path, "X1", spot_um=50.0)
    counts = dict(zip(CELLS, cell_counts(), strict=True))
    # 50 um bins: c0, c1, c4 in (row 0, col 0); c2 in (0, 1); c3 in (1, 0)
    expected = {
        "X1_0_0": (counts["c0"] + counts["c1"] + counts["c4"], (25.0, 25.0), 3),
        "X1_0_1": (counts["c2"], (75.0, 25.0), 1),
        "X1_1_0": (counts["c3"], (25.0, 75.0), 1),
    }
    assert sorted(adata.obs_names) == sorted(expected)
    for spot, (summed, centre_um, n_cells) in expected.items():
        row = list(adata.obs_names).index(spot)
        np.testing.assert_array_equal(adata.X[row].toarray().ravel(), summed)
        np.testing.assert_allclose(adata.obsm["spatial"][row], he_pixels(centre_um))
        assert adata.obs["n_cells"].iloc[row] == n_cells
    assert list(adata.var_names) == GENES
    assert adata.uns["microns_per_pixel"] == pytest.approx(0.425)
    assert adata.uns["spot_diameter_px"] == pytest.approx(50.0 / 0.425)
    assert adata.uns["image_path"].endswith("section_he_image.ome.tif")
    assert adata.uns["platform"] == "xenium"


def test_min_cells_drops_thin_pseudo_spots(tmp_path):
    write_xenium(tmp_path / "X1")
    adata = xenium.read_section(tmp_path, "X1", spot_um=50.0, min_cells=2)
    assert list(adata.obs_names) == ["X1_0_0"]


def test_hex_grid_assigns_every_cell_to_its_nearest_centre():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, size=(2000, 2))
    rowcol, centres = xenium.pseudo_spot_grid(xy, 55.0, "hex")
    # brute force over a grid wide enough to hold every nearest centre
    rows, cols = np.meshgrid(np.arange(-2, 14), np.arange(-2, 14), indexing="ij")
    grid = np.stack([cols * 55.0 + (rows % 2) * 27.5, rows * 55.0 * np.sqrt(3) / 2], axis=-1).reshape(-1, 2)
    nearest = np.linalg.norm(xy[:, None, :] - grid[None], axis=2).min(axis=1)
    np.testing.assert_allclose(np.linalg.norm(xy - centres, axis=1), nearest)
    # the (row, col) label names the centre
    np.testing.assert_allclose(centres[:, 1], rowcol[:, 0] * 55.0 * np.sqrt(3) / 2)


def test_alignment_from_the_options_when_no_file(tmp_path):
    write_xenium(tmp_path / "X1", alignment=False)
    with pytest.raises(InputDataError, match=r"No H&E alignment file.*imagealignment.*reader_options: {alignment"):
        xenium.read_section(tmp_path, "X1", spot_um=50.0)
    adata = xenium.read_section(tmp_path, "X1", spot_um=50.0, alignment=ALIGNMENT.tolist())
    assert adata.n_obs == 3


def test_bad_options_and_tables_are_named(tmp_path):
    folder = write_xenium(tmp_path / "X1")
    with pytest.raises(InputDataError, match="grid in"):
        xenium.read_section(tmp_path, "X1", grid="triangle")
    pd.DataFrame({"cell_id": ["c0"], "x": [1.0]}).to_parquet(folder / "cells.parquet")
    with pytest.raises(InputDataError, match=r"lacks the columns \['x_centroid', 'y_centroid'\]"):
        xenium.read_section(tmp_path, "X1")


def write_xenium_dataset(raw: Path, sections: int = 4, side_um: float = 500.0, n_genes: int = 30) -> Path:
    """Generated Xenium sections: cells uniform over a square, Poisson counts with spatial gradients, an H&E of
    0.5 um pixels and its alignment (H&E pixel -> Xenium pixel = 0.5 / 0.2125)."""
    rng = np.random.default_rng(0)
    genes = [f"GENE{g:02d}" for g in range(n_genes)]
    scale = 0.5 / 0.2125
    for index in range(sections):
        folder = raw / f"X{index}"
        folder.mkdir(parents=True)
        xy = rng.uniform(5, side_um - 5, size=(1500, 2))
        slope = rng.normal(size=(2, n_genes))
        rate = np.exp(0.2 + 0.5 * np.outer(xy[:, 0] / side_um, slope[0]) + 0.5 * np.outer(xy[:, 1] / side_um, slope[1]))
        ids = [f"cell{index}_{i:05d}" for i in range(len(xy))]
        pd.DataFrame({"cell_id": ids, "x_centroid": xy[:, 0], "y_centroid": xy[:, 1]}).to_parquet(
            folder / "cells.parquet", index=False
        )
        write_10x_h5(folder / "cell_feature_matrix.h5", rng.poisson(rate), genes, ids)
        write_image(folder / "he_image.tif", size=(int(side_um / 0.5), int(side_um / 0.5)))
        np.savetxt(folder / "he_imagealignment.csv", np.diag([scale, scale, 1.0]), delimiter=",")
    return raw


@pytest.mark.slow
def test_xenium_runs_end_to_end_through_the_cli(project_copy, tmp_path):
    from tests.helpers.project import run_kedro

    raw = write_xenium_dataset(tmp_path / "xenium_raw")
    tiny = "train.epochs:2,train.model.hidden:16,train.model.heads:2,train.model.n_layers:1"
    result = run_kedro(project_copy, "run", "--params", f"dataset:xenium,raw_dir:{raw},{tiny}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    predictions = project_copy / "data" / "07_model_output" / "xenium" / "efficientnet_lite0" / "predictions"
    assert sorted(p.stem for p in predictions.glob("*.h5ad")) == ["X0", "X1", "X2", "X3"]


def test_older_xenium_bundles_with_cells_csv_gz_read_the_same(tmp_path):
    folder = write_xenium(tmp_path / "X1")
    expected = xenium.read_section(tmp_path, "X1", spot_um=50.0)
    cells = pd.read_parquet(folder / "cells.parquet")
    cells["cell_id"] = cells["cell_id"].astype(str)
    cells.to_csv(folder / "cells.csv.gz", index=False)
    (folder / "cells.parquet").unlink()
    assert xenium.discover_sections(tmp_path) == ["X1"]
    adata = xenium.read_section(tmp_path, "X1", spot_um=50.0)
    assert list(adata.obs_names) == list(expected.obs_names)
    np.testing.assert_array_equal(adata.X.toarray(), expected.X.toarray())
    np.testing.assert_array_equal(adata.obsm["spatial"], expected.obsm["spatial"])
    (folder / "cells.csv.gz").unlink()
    with pytest.raises(InputDataError) as error:
        xenium.read_section(tmp_path, "X1")
    assert str(error.value) == (
        f"Missing Xenium cell table: '{folder / 'cells.csv.gz'}'. Expected layout: {xenium.XENIUM_LAYOUT}"
    )


def test_alignment_and_image_problems_name_the_file_and_the_fix(tmp_path):
    folder = write_xenium(tmp_path / "X1")
    np.savetxt(folder / "section_he_imagealignment.csv", np.diag([2.0, 0.0, 1.0]), delimiter=",")
    with pytest.raises(InputDataError) as error:
        xenium.read_section(tmp_path, "X1")
    assert str(error.value) == (
        f"The H&E alignment in {folder / 'section_he_imagealignment.csv'} is not an invertible 3x3 affine matrix."
    )
    with pytest.raises(InputDataError, match=r"^The H&E alignment in reader_options\.alignment is not"):
        xenium.read_alignment(folder, [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(xenium.read_alignment(folder, [[1, 0, 0], [0, 1, 0], [0, 0, 1]]), np.eye(3))
    np.savetxt(folder / "other_he_imagealignment.csv", ALIGNMENT, delimiter=",")
    with pytest.raises(InputDataError, match=r"^Several H&E alignment file \(\*he_imagealignment\.csv\) in"):
        xenium.read_alignment(folder, None)
    # with two H&E images, the one named as an H&E wins; morphology images never count
    write_image(folder / "notes.png", size=(20, 20))
    assert xenium._image(folder).name == "section_he_image.ome.tif"
    (folder / "section_he_image.ome.tif").rename(folder / "slide.tif")
    with pytest.raises(InputDataError) as error:
        xenium._image(folder)
    assert str(error.value) == (
        f"Expected one H&E image in '{folder}', found notes.png, slide.tif: keep the post-Xenium H&E "
        "(morphology*.ome.tif files are ignored)."
    )


def test_no_xenium_section_says_which_layout_it_expects(tmp_path):
    with pytest.raises(InputDataError) as error:
        xenium.discover_sections(tmp_path / "absent")
    assert (
        str(error.value)
        == f"No Xenium sections found in '{tmp_path / 'absent'}'. Expected layout: {xenium.XENIUM_LAYOUT}"
    )
