"""Cross-validation folds over sections: which section is tested, which validates, which train.

Two schemes:
- `leave_one_section_out` (the papers' protocol): one fold per section, named after it.
  On HER2+ it leaks the patient, because the test tumour's other sections train.
- `leave_one_patient_out`: one fold per patient, named after it; every section of that
  patient is tested together.

Validation (`validation: auto`): the first non-test section met when walking the
manifest order cyclically from the (last) test section, preferring a section of a
patient other than the test patient(s), so model selection sees an unseen-looking
section without ever touching the test section. An explicit section id is used in
every fold where it is not tested; in the fold that tests it, `auto` applies.

`validation: rotate` adds, to each fold, one member fold per other possible validation
section (`<fold>@<validation>`, training on the rest). Every member leaves the fold's
test section out of training and selection and fits its targets on the same sections,
so the mean of their predictions is an ensemble evaluated honestly on that test section
(the evaluation's `spahgc_ensemble` row). Each fold spec then names its `ensemble`.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

SCHEMES = ("leave_one_section_out", "leave_one_patient_out")


def _test_groups(sections: list[dict[str, Any]], scheme: str) -> dict[str, list[str]]:
    """Fold name -> test section ids, in manifest order."""
    if scheme == "leave_one_section_out":
        return {s["section_id"]: [s["section_id"]] for s in sections}
    if scheme == "leave_one_patient_out":
        groups: dict[str, list[str]] = {}
        for s in sections:
            groups.setdefault(str(s["patient_id"]), []).append(s["section_id"])
        return groups
    raise ValueError(f"Unknown graph.fold_scheme '{scheme}'. Choose one of: {', '.join(SCHEMES)}.")


def auto_validation(sections: list[dict[str, Any]], test: list[str]) -> str:
    """The section after the test section(s) in cyclic manifest order, preferring another patient."""
    ids = [s["section_id"] for s in sections]
    patient = {s["section_id"]: str(s["patient_id"]) for s in sections}
    test_patients = {patient[t] for t in test}
    start = max(ids.index(t) for t in test) + 1
    walk = [ids[(start + i) % len(ids)] for i in range(len(ids))]
    candidates = [s for s in walk if s not in test]
    other_patient = [s for s in candidates if patient[s] not in test_patients]
    return (other_patient or candidates)[0]


def make_folds(
    sections: list[dict[str, Any]], scheme: str, fold: str = "all", validation: str = "auto"
) -> dict[str, Any]:
    """Folds as `{scheme, folds: {name: {test, validation, train}}}`; `fold` picks one or `all`."""
    ids = [s["section_id"] for s in sections]
    groups = _test_groups(sections, scheme)
    if fold != "all":
        if str(fold) not in groups:
            raise ValueError(
                f"graph.fold '{fold}' is not a fold of scheme '{scheme}'. Choose 'all' or one of: {', '.join(groups)}."
            )
        groups = {str(fold): groups[str(fold)]}
    if validation not in ("auto", "rotate") and validation not in ids:
        raise ValueError(
            f"graph.validation '{validation}' is not a section of this dataset. "
            f"Choose 'auto', 'rotate' or one of: {', '.join(ids)}."
        )
    folds = {}
    for name, test in groups.items():
        if len(test) == len(ids):
            raise ValueError(
                f"Fold {name} tests every section ({', '.join(ids)}): nothing is left to train "
                "on. Use leave_one_section_out or add sections of other patients."
            )
        if validation not in ("auto", "rotate") and validation not in test:
            chosen = validation
        else:
            if validation not in ("auto", "rotate"):
                logger.warning(
                    "Fold %s tests the requested validation section %s; using the automatic choice for this fold.",
                    name,
                    validation,
                )
            chosen = auto_validation(sections, test)
        train = [s for s in ids if s not in test and s != chosen]
        # Training graphs retrieve from the *other* training sections, so two are needed.
        if len(train) < 2:
            raise ValueError(
                f"Fold {name} leaves {len(train)} training section(s) after holding out test "
                f"{test} and validation [{chosen}]; at least 2 are needed (each training "
                "section retrieves from the others). Add sections or use leave_one_section_out."
            )
        folds[name] = {"test": list(test), "validation": [chosen], "train": train}
        if validation == "rotate":
            folds[name]["ensemble"] = name
            for other in [s for s in ids if s not in test and s != chosen]:
                folds[f"{name}@{other}"] = {
                    "test": list(test),
                    "validation": [other],
                    "train": [s for s in ids if s not in test and s != other],
                    "ensemble": name,
                }
    return {"scheme": scheme, "folds": folds}


def ensemble_members(folds: dict[str, Any]) -> dict[str, list[str]]:
    """Each fold that heads an ensemble (`validation: rotate`) -> its member folds, itself first."""
    members: dict[str, list[str]] = {}
    for name, spec in folds["folds"].items():
        if "ensemble" in spec:
            members.setdefault(spec["ensemble"], []).append(name)
    return {head: sorted(names, key=lambda n: n != head) for head, names in members.items()}


def is_primary_fold(folds: dict[str, Any], fold: str) -> bool:
    """Whether a fold is scored on its own: not a rotated member of another fold's ensemble."""
    return folds["folds"][fold].get("ensemble", fold) == fold
