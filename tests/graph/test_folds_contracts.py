"""Fold contracts the protocol tests leave open: the exact error and warning texts, and when a fallback warns."""

from __future__ import annotations

import logging

import pytest

from spahgc_kedro.folds import make_folds
from tests.helpers.tiny_sections import SECTIONS

MANIFEST_SECTIONS = [{"section_id": s, "patient_id": p} for s, p in SECTIONS]
# 4 sections of 2 patients, in manifest order a1, a2, b1, b2
TWO_PATIENTS = [
    {"section_id": "a1", "patient_id": "P1"},
    {"section_id": "a2", "patient_id": "P1"},
    {"section_id": "b1", "patient_id": "P2"},
    {"section_id": "b2", "patient_id": "P2"},
]
# per section, auto validation: the next section of the other patient, walking the manifest cyclically
AUTO_FOLDS = {
    "a1": {"test": ["a1"], "validation": ["b1"], "train": ["a2", "b2"]},
    "a2": {"test": ["a2"], "validation": ["b1"], "train": ["a1", "b2"]},
    "b1": {"test": ["b1"], "validation": ["a1"], "train": ["a2", "b2"]},
    "b2": {"test": ["b2"], "validation": ["a1"], "train": ["a2", "b1"]},
}


def _no_leak(folds):
    for fold in folds["folds"].values():
        assert not set(fold["test"]) & set(fold["train"] + fold["validation"])


def test_an_unknown_fold_is_named_with_the_schemes_folds():
    """An unknown graph.fold names itself, the scheme and every fold of that scheme."""
    with pytest.raises(ValueError) as error:
        make_folds(TWO_PATIENTS, "leave_one_patient_out", fold="P3")
    assert str(error.value) == (
        "graph.fold 'P3' is not a fold of scheme 'leave_one_patient_out'. Choose 'all' or one of: P1, P2."
    )


def test_an_unknown_validation_section_is_named_with_every_section():
    """An unknown graph.validation names itself and lists 'auto', 'rotate' and every section id."""
    with pytest.raises(ValueError) as error:
        make_folds(TWO_PATIENTS, "leave_one_section_out", validation="c1")
    assert str(error.value) == (
        "graph.validation 'c1' is not a section of this dataset. Choose 'auto', 'rotate' or one of: a1, a2, b1, b2."
    )


def test_a_patient_fold_testing_every_section_says_what_to_do():
    """One patient under leave_one_patient_out: the message lists every section and both fixes."""
    one_patient = [dict(s, patient_id="P1") for s in TWO_PATIENTS]
    with pytest.raises(ValueError) as error:
        make_folds(one_patient, "leave_one_patient_out")
    assert str(error.value) == (
        "Fold P1 tests every section (a1, a2, b1, b2): nothing is left to train on. Use leave_one_section_out "
        "or add sections of other patients."
    )


def test_too_few_training_sections_names_the_fold_test_and_validation():
    """2 patients of 2 sections per patient leave 1 training section: the message names all and the fix."""
    with pytest.raises(ValueError) as error:
        make_folds(TWO_PATIENTS, "leave_one_patient_out")
    assert str(error.value) == (
        "Fold P1 leaves 1 training section(s) after holding out test ['a1', 'a2'] and validation [b1]; at least 2 "
        "are needed (each training section retrieves from the others). Add sections or use leave_one_section_out."
    )


def test_auto_and_rotate_choose_validation_without_a_warning(caplog):
    """'auto' and 'rotate' give the hand-made folds and log no fallback warning."""
    with caplog.at_level(logging.WARNING, logger="spahgc_kedro.folds"):
        auto = make_folds(TWO_PATIENTS, "leave_one_section_out", validation="auto")
        rotated = make_folds(TWO_PATIENTS, "leave_one_section_out", fold="a1", validation="rotate")
    assert caplog.messages == []
    assert auto == {"scheme": "leave_one_section_out", "folds": AUTO_FOLDS}
    assert rotated["folds"] == {
        "a1": {"test": ["a1"], "validation": ["b1"], "train": ["a2", "b2"], "ensemble": "a1"},
        "a1@a2": {"test": ["a1"], "validation": ["a2"], "train": ["b1", "b2"], "ensemble": "a1"},
        "a1@b2": {"test": ["a1"], "validation": ["b2"], "train": ["a2", "b1"], "ensemble": "a1"},
    }
    _no_leak(auto)
    _no_leak(rotated)


def test_an_explicit_validation_warns_only_in_the_fold_that_tests_it(caplog):
    """Validation b2: used where not tested; fold b2 falls back to auto with one exact warning."""
    with caplog.at_level(logging.WARNING, logger="spahgc_kedro.folds"):
        folds = make_folds(TWO_PATIENTS, "leave_one_section_out", validation="b2")
    assert caplog.messages == [
        "Fold b2 tests the requested validation section b2; using the automatic choice for this fold."
    ]
    assert folds["folds"] == {
        "a1": {"test": ["a1"], "validation": ["b2"], "train": ["a2", "b1"]},
        "a2": {"test": ["a2"], "validation": ["b2"], "train": ["a1", "b1"]},
        "b1": {"test": ["b1"], "validation": ["b2"], "train": ["a1", "a2"]},
        "b2": AUTO_FOLDS["b2"],
    }
    _no_leak(folds)


def test_a_five_section_plan_with_explicit_validation_warns_once(caplog):
    """On the 3-patient manifest, validation S3 warns for fold S3 only; S3 falls back to S5 (patient C)."""
    with caplog.at_level(logging.WARNING, logger="spahgc_kedro.folds"):
        folds = make_folds(MANIFEST_SECTIONS, "leave_one_section_out", validation="S3")
    assert caplog.messages == [
        "Fold S3 tests the requested validation section S3; using the automatic choice for this fold."
    ]
    assert folds["folds"]["S3"] == {"test": ["S3"], "validation": ["S5"], "train": ["S1", "S2", "S4"]}
    assert [fold["validation"] for name, fold in folds["folds"].items() if name != "S3"] == [["S3"]] * 4
