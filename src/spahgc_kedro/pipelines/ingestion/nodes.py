"""Nodes that resolve the dataset preset and read every section into the standard form."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from spahgc_kedro.errors import InputDataError, MissingInputError, ParameterError, UserError
from spahgc_kedro.partitions import iter_partitions
from spahgc_kedro.progress import progress
from spahgc_kedro.readers import get_reader
from spahgc_kedro.schema import Uns
from spahgc_kedro.targets import load_gene_list

logger = logging.getLogger(__name__)


def resolve_preset(dataset: str, datasets: dict[str, Any], raw_dir: str) -> dict[str, Any]:
    """Return the named dataset preset with its name and raw folder filled in."""
    if dataset not in datasets:
        raise ParameterError(
            f"Unknown dataset '{dataset}'. Known presets: {', '.join(sorted(datasets))}. "
            "For your own data use dataset:visium (Space Ranger outs/) or dataset:hest, "
            "or add a preset to conf/base/parameters_datasets.yml."
        )
    preset = {**datasets[dataset], "name": dataset, "raw_dir": raw_dir}
    panel = preset.get("gene_panel") or {}
    if panel.get("rule") == "list":
        # read now, not at the graph stage: a missing or unsafe list stops the run before any work
        load_gene_list(panel["path"])
    return preset


def select_sections(raw_folder: str, preset: dict[str, Any]) -> list[str]:
    """Section ids to read: the preset's list, or all found in the folder, minus `exclude`."""
    if not Path(raw_folder).is_dir():
        raise MissingInputError(
            f"The raw data of dataset '{preset['name']}' is not here: '{raw_folder}' does not exist. Get it from "
            f"{preset.get('source', 'its source (README, section Datasets)')} and put it there in its native layout, "
            "or point to it with --params raw_dir:/path/to/folder."
        )
    reader = get_reader(preset["format"])
    found = reader.discover_sections(raw_folder)
    wanted = found if preset.get("sections", "auto") == "auto" else [str(s) for s in preset["sections"]]
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise InputDataError(
            f"Sections {missing} of dataset '{preset['name']}' are not in '{raw_folder}' "
            f"(found: {found or 'none'}). Add their files or list only present sections with "
            f"--params datasets.{preset['name']}.sections:[...]"
        )
    excluded = set(map(str, preset.get("exclude") or []))
    chosen = [s for s in wanted if s not in excluded]
    if not chosen:
        raise InputDataError(f"No section of dataset '{preset['name']}' left in '{raw_folder}' after exclusions.")
    logger.info("Dataset %s: %d sections (%s)", preset["name"], len(chosen), ", ".join(chosen))
    return chosen


def patient_of(section_id: str, rule: str | dict[str, str], reader_patient: str | None = None) -> str:
    """The patient id of a section under the preset's patient rule."""
    if isinstance(rule, dict):
        if section_id not in rule:
            raise InputDataError(f"Section {section_id} has no entry in the preset's patient mapping.")
        return str(rule[section_id])
    if rule == "first_letter":
        return section_id[0]
    if rule == "from_name":
        match = re.search(r"P\d+", section_id)
        return match.group(0) if match else section_id.split("_")[0]
    if rule == "metadata":
        return str(reader_patient) if reader_patient else section_id
    if rule == "section":
        return section_id
    raise ValueError(f"Unknown patient rule '{rule}': use first_letter, from_name, metadata, section or a mapping.")


def check_counts(adata: Any, section_id: str, where: str, counts: str) -> None:
    """Fail, naming the section and a bad entry, on counts that are not finite, negative or (raw) fractional."""
    import scipy.sparse as sp

    values = adata.X.data if sp.issparse(adata.X) else np.asarray(adata.X).ravel()
    bad = ~np.isfinite(values) | (values < 0)
    kind = "negative or not finite"
    if counts == "raw" and not bad.any():
        bad, kind = values != np.round(values), "not whole numbers"
    if bad.any():
        example = float(values[np.flatnonzero(bad)[0]])
        raise InputDataError(
            f"Section {section_id} in '{where}': {int(bad.sum())} counts are {kind} (e.g. {example!r}). The count "
            "matrix must hold raw counts; for already-normalised values set --params ingestion.counts:normalised."
        )


def read_sections(
    raw_folder: str, preset: dict[str, Any], section_ids: list[str], ingestion_params: dict[str, Any]
) -> dict[str, Any]:
    """Read each section with its format's reader and check it; return {section_id: standard AnnData}."""
    reader = get_reader(preset["format"])
    min_spots = int(ingestion_params["min_spots_per_section"])
    min_counts = float(preset.get("min_counts_per_spot") or 0)
    sections = {}
    for section_id in progress(section_ids, desc="Reading sections", unit="section"):
        try:
            adata = reader.read_section(raw_folder, section_id, **(preset.get("reader_options") or {}))
        except UserError:
            raise
        except (OSError, ValueError, KeyError) as error:
            raise InputDataError(
                f"Section {section_id} in '{raw_folder}' cannot be read as the '{preset['format']}' layout "
                f"({type(error).__name__}: {error}). Check its files against the layout in the README, section "
                "Datasets."
            ) from error
        if adata.n_vars == 0:
            raise InputDataError(f"Section {section_id} in '{raw_folder}' has no genes: check its count matrix.")
        check_counts(adata, section_id, raw_folder, ingestion_params["counts"])
        if min_counts > 0:
            keep = adata.X.sum(axis=1).A1 >= min_counts
            if (~keep).any():
                logger.warning(
                    "Section %s: dropped %d spots with fewer than %g counts.", section_id, (~keep).sum(), min_counts
                )
            adata = adata[keep].copy()
        if adata.n_obs < min_spots:
            raise InputDataError(
                f"Section {section_id} in '{raw_folder}' has {adata.n_obs} spots, fewer than "
                f"ingestion.min_spots_per_section ({min_spots}). Leave it out with --params "
                f"datasets.{preset['name']}.exclude:[{section_id}], or check its spot table."
            )
        adata.uns[Uns.PATIENT_ID] = patient_of(section_id, preset["patient"], adata.uns.get(Uns.PATIENT_ID))
        adata.uns[Uns.DATASET] = preset["name"]
        sections[section_id] = adata
    return sections


def describe_sections(sections: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    """The section manifest: the preset used and a summary line per section."""
    rows = [
        {
            "section_id": sid,
            "patient_id": a.uns[Uns.PATIENT_ID],
            "n_spots": int(a.n_obs),
            "n_genes": int(a.n_vars),
            "image_path": a.uns[Uns.IMAGE_PATH],
            "image_size": list(map(int, a.uns[Uns.IMAGE_SIZE])),
            "spot_spacing_px": float(a.uns[Uns.SPOT_SPACING_PX]),
            "microns_per_pixel": float(a.uns[Uns.MICRONS_PER_PIXEL]),
        }
        for sid, a in iter_partitions(sections)
    ]
    return {
        "dataset": preset["name"],
        "format": preset["format"],
        "raw_dir": preset["raw_dir"],
        "preset": preset,
        "sections": rows,
    }
