"""Legacy ST reader: the cSCC GEO layout on a tiny fixture, and the her2st layout on real data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from native_layouts import write_cscc, write_image

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import st_legacy

GENES = ["KRT14", "COL1A1", "MMP1"]


def make_cscc(raw: Path, section: str = "P2_ST_rep1", counts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write one cSCC section as GEO GSE144240 ships it; returns the count table."""
    grid = [(x, y) for y in (5, 6) for x in (10, 11, 12)]
    spots = pd.DataFrame(
        {
            "x": [x + 0.04 for x, _ in grid],  # spot files hold slightly adjusted array positions
            "y": [y - 0.03 for _, y in grid],
            "new_x": [x for x, _ in grid],
            "new_y": [y for _, y in grid],
            "pixel_x": [20.0 + 40.0 * (x - 10) for x, _ in grid],
            "pixel_y": [30.0 + 40.0 * (y - 5) for _, y in grid],
            "selected": [1] * 6,
        }
    )
    if counts is None:
        counts = pd.DataFrame(np.arange(18).reshape(6, 3), index=[f"{x}x{y}" for x, y in grid], columns=GENES)
    write_cscc(raw, counts, spots, section)
    return counts


def test_reads_cscc_section(tmp_path):
    counts = make_cscc(tmp_path)
    make_cscc(tmp_path, "P5_ST_rep2")
    assert st_legacy.discover_sections(tmp_path) == ["P2_ST_rep1", "P5_ST_rep2"]
    adata = st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert list(adata.obs_names) == list(counts.index)
    assert list(adata.var_names) == GENES
    np.testing.assert_array_equal(adata.X.toarray(), counts.to_numpy())
    np.testing.assert_allclose(adata.obsm["spatial"][4], [60.0, 70.0])
    assert adata.uns["platform"] == "legacy_st"
    assert adata.uns["spot_spacing_px"] == pytest.approx(40.0)
    assert adata.uns["microns_per_pixel"] == pytest.approx(5.0)


def test_cscc_drops_unmatched_spots(tmp_path, caplog):
    counts = make_cscc(tmp_path)
    extra = pd.DataFrame([[1, 2, 3]], index=["30x30"], columns=GENES)
    make_cscc(tmp_path, counts=pd.concat([counts.iloc[1:], extra]))
    with caplog.at_level(logging.WARNING):
        adata = st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert adata.n_obs == 5
    assert "dropped 1 spots with counts but no coordinates and 1 with coordinates but no counts" in caplog.text


def test_non_numeric_counts_fail(tmp_path):
    counts = make_cscc(tmp_path).astype(object)
    counts.iloc[2, 1] = "7a"
    make_cscc(tmp_path, counts=counts)
    with pytest.raises(InputDataError, match="Non-numeric count '7a' for gene 'COL1A1', spot '12x5'"):
        st_legacy.read_section(tmp_path, "P2_ST_rep1")


def test_duplicated_spots_fail(tmp_path):
    counts = make_cscc(tmp_path)
    make_cscc(tmp_path, counts=pd.concat([counts, counts.iloc[:1]]))
    with pytest.raises(InputDataError, match="duplicated spot ids .*stdata"):
        st_legacy.read_section(tmp_path, "P2_ST_rep1")


def test_spots_outside_image_fail(tmp_path):
    make_cscc(tmp_path)
    write_image(tmp_path / "GSM4284316_P2_ST_rep1.jpg", size=(60, 150))
    with pytest.raises(InputDataError, match="outside"):
        st_legacy.read_section(tmp_path, "P2_ST_rep1")


def test_missing_cscc_image_is_named(tmp_path):
    make_cscc(tmp_path)
    (tmp_path / "GSM4284316_P2_ST_rep1.jpg").unlink()
    with pytest.raises(InputDataError, match="Missing image of P2_ST_rep1"):
        st_legacy.read_section(tmp_path, "P2_ST_rep1")


@pytest.mark.shared_data
def test_her2st_real_sections(her2st_dir):
    HER2ST = her2st_dir
    assert st_legacy.discover_sections(HER2ST) == ["C2", "C3", "C4", "C5"]
    for section in ("C2", "C3", "C4", "C5"):
        adata = st_legacy.read_section(HER2ST, section)
        assert 150 <= adata.n_obs <= 200, section
        assert adata.obs_names.is_unique and adata.var_names.is_unique
        table = pd.read_csv(HER2ST / "data" / "ST-cnts" / f"{section}.tsv.gz", sep="\t", index_col=0)
        spots, genes = adata.obs_names[[0, len(adata) // 2, -1]], ["ERBB2", "GAPDH", table.columns[5]]
        for spot in spots:
            for gene in genes:
                assert adata[spot, gene].X.toarray()[0, 0] == table.loc[spot, gene], (section, spot, gene)
        assert adata.uns["image_size"][0] > 5000


def test_unselected_spots_are_dropped_and_the_spot_is_100_um(tmp_path):
    make_cscc(tmp_path)
    spot_file = tmp_path / "GSM4284316_spot_data-selection-P2_ST_rep1.tsv.gz"
    spots = pd.read_csv(spot_file, sep="\t")
    spots.loc[0, "selected"] = 0
    spots.to_csv(spot_file, sep="\t", index=False)
    adata = st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert "10x5" not in adata.obs_names and adata.n_obs == 5
    # 200 um between spot centres (40 px) -> 5 um per pixel; a legacy ST spot is 100 um wide
    assert adata.uns["spot_diameter_px"] == pytest.approx(20.0)
    assert adata.obs["array_row"].tolist()[:2] == [5, 5] and adata.obs["array_col"].tolist()[:2] == [11, 12]
    assert adata.uns["section_id"] == "P2_ST_rep1"


def test_legacy_st_messages_name_the_file_and_the_layout(tmp_path):
    make_cscc(tmp_path)
    spot_file = tmp_path / "GSM4284316_spot_data-selection-P2_ST_rep1.tsv.gz"
    pd.DataFrame({"x": [10.0], "y": [5.0]}).to_csv(spot_file, sep="\t", index=False)
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert str(error.value) == (
        f"Spot table '{spot_file}' lacks columns ['pixel_x', 'pixel_y']; expected x y pixel_x pixel_y."
    )
    spot_file.unlink()
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert str(error.value) == (
        f"Missing spot table of P2_ST_rep1: no file matches '{tmp_path / '*spot_data-selection-P2_ST_rep1.tsv*'}'. "
        f"Expected layout: {st_legacy.CSCC_LAYOUT}"
    )
    with pytest.raises(InputDataError) as error:
        st_legacy.discover_sections(tmp_path / "absent")
    assert str(error.value) == (
        f"No legacy ST sections found in '{tmp_path / 'absent'}'. Expected either {st_legacy.HER2ST_LAYOUT}, or "
        f"{st_legacy.CSCC_LAYOUT}."
    )


def test_a_gzipped_cscc_image_says_to_decompress_it(tmp_path):
    import gzip

    make_cscc(tmp_path)
    image = tmp_path / "GSM4284316_P2_ST_rep1.jpg"
    (tmp_path / "GSM4284316_P2_ST_rep1.jpg.gz").write_bytes(gzip.compress(image.read_bytes()))
    image.unlink()
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert str(error.value) == (
        f"Missing image of P2_ST_rep1 in '{tmp_path}'. Found 'GSM4284316_P2_ST_rep1.jpg.gz': decompress it with "
        f"gunzip. Expected layout: {st_legacy.CSCC_LAYOUT}"
    )


def test_her2st_layout_is_discovered_and_its_missing_files_named(tmp_path):
    root = tmp_path / "data"
    make_cscc(tmp_path / "scratch")
    counts = pd.read_csv(tmp_path / "scratch" / "GSM4284316_P2_ST_rep1_stdata.tsv.gz", sep="\t", index_col=0)
    (root / "ST-cnts").mkdir(parents=True)
    counts.to_csv(root / "ST-cnts" / "A1.tsv.gz", sep="\t")
    counts.to_csv(root / "ST-cnts" / "B10.tsv.gz", sep="\t")
    assert st_legacy.discover_sections(tmp_path) == ["A1", "B10"]
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "A1")
    spots = root / "ST-spotfiles" / "A1_selection.tsv"
    assert str(error.value) == f"Missing spot table of A1: '{spots}'. Expected layout: {st_legacy.HER2ST_LAYOUT}"
    spots.parent.mkdir()
    pd.read_csv(tmp_path / "scratch" / "GSM4284316_spot_data-selection-P2_ST_rep1.tsv.gz", sep="\t").to_csv(
        spots, sep="\t", index=False
    )
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "A1")
    folder = root / "ST-imgs" / "A" / "A1"
    assert str(error.value) == f"Missing image folder of A1: '{folder}'. Expected layout: {st_legacy.HER2ST_LAYOUT}"
    folder.mkdir(parents=True)
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "A1")
    assert str(error.value) == f"No .jpg image in '{folder}'. Expected layout: {st_legacy.HER2ST_LAYOUT}"
    write_image(folder / "HE_A1.jpg")
    adata = st_legacy.read_section(tmp_path, "A1")
    assert list(adata.obs_names) == list(counts.index)
