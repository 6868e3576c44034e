"""The catalog as Kedro resolves it: every persisted dataset in its layer, under its dataset (and encoder) folder."""

from __future__ import annotations

import pytest

from tests.helpers.project import project_catalog

# the ingestion stage does not depend on the encoder
BEFORE_ENCODER = ("data/02_intermediate/",)


@pytest.fixture(scope="module")
def catalog():
    return project_catalog(dataset="ds_x", encoder="enc_y", raw_dir="/raw/ds_x")


def test_every_dataset_has_a_kedro_viz_layer(catalog):
    for name, entry in catalog.items():
        assert entry["metadata"]["kedro-viz"]["layer"], name


def test_outputs_sit_under_their_dataset_and_encoder(catalog):
    paths = {name: entry.get("filepath", entry.get("path")) for name, entry in catalog.items()}
    for name, path in paths.items():
        if path is None or catalog[name]["metadata"]["kedro-viz"]["layer"] == "raw":
            continue
        if path.startswith(BEFORE_ENCODER):
            assert "/ds_x/" in path and "enc_y" not in path, (name, path)
        else:
            assert "/ds_x/enc_y/" in path + "/", (name, path)
    # evaluation and interpretation outputs of two encoders never share a folder
    for name in ("fold_metrics", "comparison_table", "spatial_maps", "report"):
        assert paths[name].startswith("data/08_reporting/ds_x/enc_y/"), name
    assert paths["raw_slides"] == "/raw/ds_x"


def test_reports_and_models_are_versioned(catalog):
    for name in ("section_manifest", "trained_models", "fold_metrics", "overall_metrics", "report"):
        assert catalog[name].get("versioned") is True, name
