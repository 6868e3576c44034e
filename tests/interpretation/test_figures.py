"""Spatial maps and thumbnails: right spots, right images, huge images never read whole."""

import numpy as np
import pytest

from spahgc_kedro.images import read_thumbnail
from spahgc_kedro.pipelines.interpretation.nodes import plot_spatial_maps
from spahgc_kedro.predictions import describe_run, gather_predictions

PARAMS = {"thumbnail_max_side": 256}


def test_maps_have_one_point_per_spot_and_the_he_background(synthetic_run, sections_with_images):
    predictions = gather_predictions(synthetic_run["predictions"], synthetic_run["folds"])
    run_info = describe_run(predictions, synthetic_run["folds"])
    genes = {"best": ["G3", "G1"], "markers": ["G1"]}
    figure, pngs = plot_spatial_maps(predictions, sections_with_images, genes, run_info, PARAMS)
    # 3 folds x 2 distinct genes x (measured, predicted).
    assert len(figure.data) == 12
    assert all(len(trace.x) == 36 for trace in figure.data)
    assert sum(trace.visible for trace in figure.data) == 2
    # each section's thumbnail is in the figure once (measured and predicted axes), only the shown one visible
    images = figure.layout.images
    assert len(images) == 3 * 2 and all(image.source.startswith("data:image/jpeg") for image in images)
    assert [image.visible for image in images] == [True, True] + [False] * 4
    assert len({image.source for image in images}) <= 3
    # the menu toggles images rather than resending them
    second = figure.layout.updatemenus[0].buttons[2].args[1]
    assert not any("source" in str(key) for key in second) and sum(v is True for v in second.values()) == 2
    assert figure.data[0].marker.colorbar.title.text.startswith("measured")
    assert len(figure.layout.updatemenus[0].buttons) == 6
    assert "synthetic" in figure.layout.title.text and "leave_one_section_out" in figure.layout.title.text
    assert sorted(pngs) == ["fold_0_S0.png", "fold_1_S1.png", "fold_2_S2.png"]
    axes = pngs["fold_0_S0.png"].axes
    from matplotlib.collections import PathCollection

    scatters = [c for ax in axes for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 4 and all(len(c.get_offsets()) == 36 for c in scatters)


def test_maps_without_sections_still_draw(synthetic_run):
    predictions = gather_predictions(synthetic_run["predictions"], synthetic_run["folds"])
    run_info = describe_run(predictions, synthetic_run["folds"])
    figure, _ = plot_spatial_maps(predictions, {}, {"best": ["G0"], "markers": []}, run_info, PARAMS)
    assert len(figure.data) == 6 and not figure.layout.images


def test_jpeg_thumbnail_is_downsampled_and_reports_full_size(tmp_path):
    from PIL import Image

    path = tmp_path / "big.jpg"
    Image.fromarray(np.zeros((2000, 3000, 3), dtype=np.uint8)).save(path)
    thumbnail, full_size = read_thumbnail(path, 300)
    assert full_size == (3000, 2000)
    assert max(thumbnail.shape[:2]) <= 300 and thumbnail.shape[2] == 3


def test_tiff_thumbnail_reads_a_small_pyramid_level(tmp_path):
    import tifffile

    path = tmp_path / "pyramid.tif"
    base = np.zeros((2048, 1024, 3), dtype=np.uint8)
    base[:, :512] = 255
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, subifds=2, tile=(256, 256))
        tif.write(base[::2, ::2], subfiletype=1, tile=(256, 256))
        tif.write(base[::4, ::4], subfiletype=1, tile=(256, 256))
    thumbnail, full_size = read_thumbnail(path, 200)
    assert full_size == (1024, 2048)
    assert max(thumbnail.shape[:2]) <= 200
    # Left half white, right half black survives downsampling.
    assert thumbnail[:, : thumbnail.shape[1] // 2 - 2].min() > 200 and thumbnail[:, -2:].max() < 50


@pytest.mark.parametrize("tiled", [True, False])
def test_tiff_without_pyramid_is_read_strided(tmp_path, tiled):
    import tifffile

    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, np.full((1200, 1600, 3), 90, dtype=np.uint8), tile=(256, 256) if tiled else None)
    thumbnail, full_size = read_thumbnail(path, 100)
    assert full_size == (1600, 1200) and max(thumbnail.shape[:2]) <= 100 and thumbnail.mean() == pytest.approx(90)


def test_report_figures_carry_each_image_once_and_plotly_js_compressed(synthetic_run, sections_with_images):
    import base64
    import gzip
    import json
    import re

    from plotly.offline import get_plotlyjs

    from spahgc_kedro.report import figure_html, plotly_loader_html

    predictions = gather_predictions(synthetic_run["predictions"], synthetic_run["folds"])
    run_info = describe_run(predictions, synthetic_run["folds"])
    figure, _ = plot_spatial_maps(predictions, sections_with_images, {"best": ["G3"], "markers": []}, run_info, PARAMS)
    figure.layout.title.text = "</script> in a title"
    page = figure_html(figure, "maps")
    (text,) = re.findall(r'<script type="application/json" id="maps-spec">(.*?)</script>', page, re.S)
    spec = json.loads(text)
    # each distinct thumbnail once (these sections share one image), referenced by both axes of every section
    images = spec["figure"]["layout"]["images"]
    assert len(images) == 6 and len(spec["sources"]) == len({image.source for image in figure.layout.images})
    restored = [spec["sources"][image["source"]] for image in spec["figure"]["layout"]["images"]]
    assert restored == [image.source for image in figure.layout.images]
    assert spec["figure"]["layout"]["title"]["text"] == "</script> in a title"
    # spot positions to 0.1 px, values to 1e-4: what the map can show
    np.testing.assert_allclose(spec["figure"]["data"][0]["x"], figure.data[0].x, atol=0.05)
    (packed,) = re.findall(r'atob\("([^"]+)"\)', plotly_loader_html())
    assert gzip.decompress(base64.b64decode(packed)).decode() == get_plotlyjs()
