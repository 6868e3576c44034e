"""The generated Visium HD-like dataset, read back by the project's Visium HD reader."""

from __future__ import annotations

import numpy as np
import pytest

from spahgc_kedro.demo_hd import COMPARTMENTS, generate_visium_hd, main
from spahgc_kedro.readers import visium_hd


@pytest.fixture(scope="module")
def hd_dataset(tmp_path_factory):
    return generate_visium_hd(tmp_path_factory.mktemp("hd"), bins=1600, n_genes=40, sections=("HD1", "HD2"))


def test_both_bin_sizes_are_read_with_sixteen_um_bins_summing_their_four_eight_um_bins(hd_dataset):
    assert visium_hd.discover_sections(hd_dataset) == ["HD1", "HD2"]
    fine = visium_hd.read_section(hd_dataset, "HD1", bin_um=8)
    coarse = visium_hd.read_section(hd_dataset, "HD1", bin_um=16)
    assert fine.n_obs == 40 * 40 and coarse.n_obs == 20 * 20
    assert list(fine.var_names) == list(coarse.var_names) == (hd_dataset / "genes.txt").read_text().split()
    # by hand from the array coordinates: bin (r, c) of 16 um pools the 8 um bins (2r..2r+1, 2c..2c+1)
    fine_counts = np.asarray(fine.X.todense())
    parent = (fine.obs["array_row"].to_numpy() // 2) * 100 + fine.obs["array_col"].to_numpy() // 2
    for i, key in enumerate(coarse.obs["array_row"].to_numpy() * 100 + coarse.obs["array_col"].to_numpy()):
        members = parent == key
        assert members.sum() == 4
        np.testing.assert_array_equal(np.asarray(coarse.X[i].todense()).ravel(), fine_counts[members].sum(axis=0))
        np.testing.assert_allclose(coarse.obsm["spatial"][i], fine.obsm["spatial"][members].mean(axis=0))
    # true spacing: 8 um bins 16 px apart at 0.5 um per pixel
    assert fine.uns["microns_per_pixel"] == 0.5
    assert np.diff(np.unique(fine.obsm["spatial"][:, 0]))[0] == pytest.approx(16.0)


def test_the_image_under_each_bin_shows_the_compartment_its_counts_come_from(hd_dataset):
    section = visium_hd.read_section(hd_dataset, "HD2", bin_um=8)
    counts = np.asarray(section.X.todense(), dtype=float)
    # each compartment's marker genes (named after it) outweigh the others where it lies
    marker_sums = np.stack(
        [counts[:, section.var_names.str.startswith(name[:3].upper())].sum(axis=1) for name in COMPARTMENTS], axis=1
    )
    dominant = marker_sums.argmax(axis=1)
    import tifffile

    # read with tifffile, not the project's image reader
    pixels = tifffile.imread(section.uns["image_path"], level=0).astype(float)
    brightness = np.array(
        [pixels[int(y) - 4 : int(y) + 4, int(x) - 4 : int(x) + 4].mean() for x, y in section.obsm["spatial"]]
    )
    by_compartment = {c: brightness[dominant == c].mean() for c in range(len(COMPARTMENTS)) if (dominant == c).any()}
    # adipose (pale) bins are the brightest, immune (dense nuclei) ones the darkest: x/y or rows swapped would mix them
    assert max(by_compartment, key=by_compartment.get) == COMPARTMENTS.index("adipose")
    assert min(by_compartment, key=by_compartment.get) == COMPARTMENTS.index("immune")


def test_the_image_is_a_tiled_pyramid_covering_every_bin(hd_dataset):
    import tifffile

    with tifffile.TiffFile(hd_dataset / "HD1" / "HD1_tissue_image.tif") as tif:
        levels = tif.series[0].levels
        assert len(levels) == 4 and levels[0].pages[0].is_tiled
        height, width = levels[0].shape[:2]
        assert [level.shape[0] for level in levels] == [-(-height // 2**i) for i in range(4)]
    section = visium_hd.read_section(hd_dataset, "HD1", bin_um=8)
    assert (section.obsm["spatial"] > 0).all() and (section.obsm["spatial"] < [width, height]).all()


def test_the_command_refuses_to_write_into_a_folder_that_holds_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--bins", "100"])
    assert (tmp_path / "keep.txt").read_text() == "mine"
