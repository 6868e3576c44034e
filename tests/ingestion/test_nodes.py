"""Ingestion nodes called directly, on the generated demo data."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from spahgc_kedro.demo import SECTIONS, generate_demo
from spahgc_kedro.errors import InputDataError
from spahgc_kedro.pipelines.ingestion.nodes import (
    describe_sections,
    patient_of,
    read_sections,
    resolve_preset,
    select_sections,
)

PRESETS = {
    "demo": {
        "format": "st_legacy",
        "sections": "auto",
        "exclude": [],
        "patient": "first_letter",
        "gene_panel": {"rule": "hvg_intersection", "n_top": 80},
        "min_counts_per_spot": 0,
    }
}


INGESTION = {"min_spots_per_section": 20, "counts": "raw"}


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_demo_generator_is_deterministic(tmp_path, demo_raw):
    again = generate_demo(tmp_path / "demo")
    assert _digest(again) == _digest(demo_raw)
    assert len(_digest(again)) == 4 * len(SECTIONS)  # counts, spots, image, region labels


def test_unknown_dataset_names_the_known_presets():
    with pytest.raises(ValueError, match="Unknown dataset 'alexx'.*demo"):
        resolve_preset("alexx", PRESETS, "data/01_raw/alexx")


def test_missing_listed_section_is_named(demo_raw):
    preset = {**resolve_preset("demo", PRESETS, str(demo_raw)), "sections": ["A1", "Z9"]}
    with pytest.raises(InputDataError, match=r"\['Z9'\]"):
        select_sections(str(demo_raw), preset)


def test_exclusions_and_patients(demo_raw):
    preset = {**resolve_preset("demo", PRESETS, str(demo_raw)), "exclude": ["B2"]}
    ids = select_sections(str(demo_raw), preset)
    assert ids == ["A1", "A2", "B1"]
    sections = read_sections(str(demo_raw), preset, ids, INGESTION)
    assert [a.uns["patient_id"] for a in sections.values()] == ["A", "A", "B"]
    manifest = describe_sections(sections, preset)
    assert [row["n_spots"] for row in manifest["sections"]] == [a.n_obs for a in sections.values()]


def test_demo_sections_follow_the_standard_form(demo_raw):
    preset = resolve_preset("demo", PRESETS, str(demo_raw))
    sections = read_sections(str(demo_raw), preset, select_sections(str(demo_raw), preset), INGESTION)
    assert len({a.uns["patient_id"] for a in sections.values()}) >= 2
    for adata in sections.values():
        assert 200 <= adata.n_obs <= 400
        width, height = adata.uns["image_size"]
        xy = adata.obsm["spatial"]
        assert xy.shape == (adata.n_obs, 2) and (xy[:, 0] < width).all() and (xy[:, 1] < height).all()
        assert adata.obs_names.is_unique and adata.var_names.is_unique
        assert np.isclose(adata.uns["spot_spacing_px"], 120, rtol=0.1)
        assert adata.X.sum() > 0


def test_min_counts_filter_drops_spots(demo_raw, caplog):
    preset = {**resolve_preset("demo", PRESETS, str(demo_raw)), "min_counts_per_spot": 1000}
    sections = read_sections(str(demo_raw), preset, ["A1"], INGESTION)
    assert sections["A1"].X.sum(axis=1).min() >= 1000
    assert "fewer than 1000 counts" in caplog.text


@pytest.mark.parametrize(
    ("section", "rule", "reader_patient", "expected"),
    [
        ("C2", "first_letter", None, "C"),
        ("P5_ST_rep2", "from_name", None, "P5"),
        ("CID4465", "section", None, "CID4465"),
        ("TENX95", "metadata", "patient 3", "patient 3"),
        ("TENX95", "metadata", None, "TENX95"),
        ("block1", {"block1": "BC1"}, None, "BC1"),
    ],
)
def test_patient_rules(section, rule, reader_patient, expected):
    assert patient_of(section, rule, reader_patient) == expected


def _edited_copy(demo_raw, tmp_path, section, edit_counts=None, edit_spots=None):
    """A copy of the demo raw folder with one section's count or spot table changed."""
    import shutil

    import pandas as pd

    raw = tmp_path / "raw"
    shutil.copytree(demo_raw, raw)
    if edit_counts:
        path = raw / "ST-cnts" / f"{section}.tsv.gz"
        counts = pd.read_csv(path, sep="\t", index_col=0)
        edit_counts(counts)
        counts.to_csv(path, sep="\t")
    if edit_spots:
        path = raw / "ST-spotfiles" / f"{section}_selection.tsv"
        spots = pd.read_csv(path, sep="\t")
        spots = edit_spots(spots)
        spots.to_csv(path, sep="\t", index=False)
    return raw


def test_negative_or_fractional_counts_name_the_section(demo_raw, tmp_path):
    def negative(counts):
        counts.iloc[3, 2] = -4

    raw = _edited_copy(demo_raw, tmp_path, "A2", edit_counts=negative)
    preset = resolve_preset("demo", PRESETS, str(raw))
    with pytest.raises(InputDataError, match=r"Section A2 .*negative or not finite \(e.g. -4.0\)"):
        read_sections(str(raw), preset, ["A1", "A2"], INGESTION)

    def fractional(counts):
        counts.iloc[0, 0] = 2.5

    raw = _edited_copy(demo_raw, tmp_path / "b", "A1", edit_counts=fractional)
    with pytest.raises(InputDataError, match=r"Section A1 .*not whole numbers.*ingestion.counts:normalised"):
        read_sections(str(raw), preset, ["A1"], INGESTION)
    # already-normalised input is accepted when declared
    assert read_sections(str(raw), preset, ["A1"], {**INGESTION, "counts": "normalised"})["A1"].n_obs > 200


def test_a_spot_without_coordinates_is_named(demo_raw, tmp_path):
    def blank(spots):
        spots.loc[5, "pixel_x"] = float("nan")
        return spots

    raw = _edited_copy(demo_raw, tmp_path, "B1", edit_spots=blank)
    preset = resolve_preset("demo", PRESETS, str(raw))
    with pytest.raises(InputDataError, match=r"Section B1: 1 of \d+ spot centres are not numbers"):
        read_sections(str(raw), preset, ["B1"], INGESTION)


def test_a_section_with_too_few_spots_stops_naming_it(demo_raw, tmp_path):
    raw = _edited_copy(demo_raw, tmp_path, "B2", edit_spots=lambda spots: spots.head(3))
    preset = resolve_preset("demo", PRESETS, str(raw))
    with pytest.raises(InputDataError, match=r"Section B2 .* has 3 spots, fewer than .*exclude:\[B2\]"):
        read_sections(str(raw), preset, ["A1", "B2"], INGESTION)


def test_a_missing_raw_folder_says_where_the_data_comes_from(tmp_path):
    from spahgc_kedro.errors import MissingInputError

    preset = {**resolve_preset("demo", PRESETS, str(tmp_path / "absent")), "source": "the moon"}
    with pytest.raises(MissingInputError, match="does not exist. Get it from the moon"):
        select_sections(str(tmp_path / "absent"), preset)
