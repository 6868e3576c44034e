"""Prediction AnnData: one builder, its partition key, and the arrays the evaluation reads back.

A prediction (docs/design.md §4) is an AnnData over one section's spots and one fold's
genes: `X` = predicted normalised expression (what the model outputs, min-max scaled with
the fold's statistics), `layers['log_expression']` = the same on the target-transform
scale (log10(count + 1) by default), `layers['measured']` = the measured normalised
expression when the section has ST, `obsm['spatial']` = spot centres, and `uns` saying
which fold, section, dataset, encoder and transform it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from spahgc_kedro.hints import AnnData, HeteroData
from spahgc_kedro.partitions import iter_partitions, load_partition
from spahgc_kedro.progress import progress
from spahgc_kedro.schema import Layers, Obsm, Uns
from spahgc_kedro.targets import minmax_unscale

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RUN_INFO_COLUMNS",
    "SectionPrediction",
    "describe_run",
    "describe_run_text",
    "ensemble_predictions",
    "gather_predictions",
    "prediction_spatialdata",
    "prediction_anndata",
    "prediction_key",
    "with_run_info",
]

RUN_INFO_COLUMNS = ("dataset", "n_genes_panel", "target_transform", "fold_scheme", "encoder")


def prediction_key(fold: str, section_id: str) -> str:
    """Partition key of a section's prediction: `<fold>` when the fold tests that one section, else `<fold>-<section>`."""
    return fold if section_id == fold else f"{fold}-{section_id}"


def prediction_anndata(
    predicted: np.ndarray,
    graph: HeteroData,
    scaling: dict[str, Any],
    *,
    measured: bool,
    obs: pd.DataFrame | None = None,
    genes: list[str] | None = None,
    **uns: Any,
) -> AnnData:
    """The prediction of the graph's target spots; `measured` keeps the graph's labels as `layers['measured']`;
    `genes` names the predicted columns when they are not the graph's panel (an ensemble's shared genes)."""
    import anndata as ad

    predicted = np.asarray(predicted, dtype=np.float32)
    adata = ad.AnnData(X=predicted)
    adata.obs_names = [str(s) for s in graph.spot_ids]
    adata.var_names = list(graph.genes if genes is None else genes)
    if obs is not None:
        for column in obs.columns:
            adata.obs[column] = obs[column].to_numpy()
    adata.layers[Layers.LOG_EXPRESSION] = minmax_unscale(predicted, scaling["min"], scaling["max"])
    if measured:
        adata.layers[Layers.MEASURED] = graph["target"].y.numpy().astype(np.float32)
    adata.obsm[Obsm.SPATIAL] = graph["target"].pos.numpy().astype(np.float64)
    adata.uns.update(
        {Uns.FOLD: str(graph.fold), Uns.SECTION_ID: str(graph.section_id), Uns.TARGET_TRANSFORM: scaling["transform"]}
    )
    adata.uns.update(uns)
    return adata


def prediction_spatialdata(adata: AnnData, library: str) -> Any:
    """A new section's prediction as a SpatialData object for napari-spatialdata / spatialdata-plot: the prediction
    AnnData as table `predictions` annotating circles `spots` (the spot centres, in full-resolution pixels of the
    'global' coordinate system) and the H&E thumbnail of `uns['spatial'][library]` as image `he`, scaled onto them."""
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    spatial = adata.uns["spatial"][library]
    thumbnail = np.round(np.asarray(spatial["images"]["hires"]) * 255).astype(np.uint8)
    to_full_resolution = 1.0 / float(spatial["scalefactors"]["tissue_hires_scalef"])
    image = Image2DModel.parse(
        np.moveaxis(thumbnail, -1, 0),
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        transformations={"global": Scale([to_full_resolution, to_full_resolution], axes=("y", "x"))},
    )
    spot_ids = pd.Index([str(s) for s in adata.obs_names])
    radius = float(spatial["scalefactors"]["spot_diameter_fullres"]) / 2
    spots = ShapesModel.parse(
        np.asarray(adata.obsm[Obsm.SPATIAL], dtype=np.float64)[:, :2],
        geometry=0,
        radius=np.full(len(spot_ids), radius),
        index=spot_ids,
        transformations={"global": Identity()},
    )
    # the image lives in the store, not a second time in the table
    table = adata.copy()
    del table.uns["spatial"]
    renamed = _spatialdata_names(table)
    if renamed:
        table.uns["original_names"] = renamed
    table.obs["region"] = pd.Categorical(["spots"] * len(spot_ids))
    table.obs["spot_id"] = spot_ids.to_numpy()
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"he": image}, shapes={"spots": spots}, tables={"predictions": table})


def _spatialdata_names(table: AnnData) -> dict[str, dict[str, str]]:
    """Rename in place the keys SpatialData rejects (a rotated fold's layer `fold_A1@A2`); returns
    {'layers': {new name: original name}, ...} for each renamed group, so nothing is lost."""
    from spatialdata import sanitize_name

    renamed: dict[str, dict[str, str]] = {}
    for group in ("layers", "obsm", "uns", "obs", "var"):
        container = getattr(table, group)
        is_frame = group in ("obs", "var")
        keys = list(container.columns if is_frame else container.keys())
        taken = {str(key).lower() for key in keys}
        safe = {key: sanitize_name(key, is_dataframe_column=is_frame) for key in keys}
        names = {key: _unused(name, taken) for key, name in safe.items() if name != key}
        if is_frame:
            container.rename(columns=names, inplace=True)
        for key, name in names.items():
            if not is_frame:
                container[name] = container.pop(key)
            renamed.setdefault(group, {})[name] = key
    return renamed


def _unused(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`... whichever no other key already uses (SpatialData ignores case)."""
    candidate, counter = name, 1
    while candidate.lower() in taken:
        counter += 1
        candidate = f"{name}_{counter}"
    taken.add(candidate.lower())
    return candidate


@dataclass
class SectionPrediction:
    """One test section's prediction as plain arrays: what metrics, baselines and figures read."""

    fold: str
    section_id: str
    genes: list[str]
    spot_ids: list[str]
    spatial: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray
    uns: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_anndata(cls, adata: AnnData, key: str) -> SectionPrediction:
        """Read a prediction AnnData that has measured values (a fold's test section)."""
        return cls(
            fold=str(adata.uns.get(Uns.FOLD, key)),
            section_id=str(adata.uns.get(Uns.SECTION_ID, key)),
            genes=[str(g) for g in adata.var_names],
            spot_ids=[str(s) for s in adata.obs_names],
            spatial=np.asarray(adata.obsm[Obsm.SPATIAL], dtype=np.float64),
            measured=_dense(adata.layers[Layers.MEASURED]),
            predicted=_dense(adata.X),
            uns={k: v for k, v in adata.uns.items() if isinstance(v, str | int | float)},
        )


def _dense(values: Any) -> np.ndarray:
    return np.asarray(values.toarray() if hasattr(values, "toarray") else values, dtype=np.float32)


def _member_keys(folds: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Partition key of every rotated member fold's prediction -> (its ensemble's head fold, the test section)."""
    from spahgc_kedro.folds import is_primary_fold

    return {
        prediction_key(fold, section): (spec["ensemble"], section)
        for fold, spec in folds["folds"].items()
        if not is_primary_fold(folds, fold)
        for section in spec["test"]
    }


def gather_predictions(
    predictions: Mapping[str, Callable[[], AnnData] | AnnData], folds: dict[str, Any]
) -> dict[str, SectionPrediction]:
    """Every test section's prediction by its fold's own model, keyed by partition (a leave-one-patient-out
    fold tests several); the rotated members of an ensemble are left to `ensemble_predictions`."""

    if not predictions:
        raise ValueError("No predictions found: run the train pipeline first (`kedro run --pipeline=train`).")
    members = _member_keys(folds)
    own = {key: load for key, load in predictions.items() if key not in members}
    return {
        key: SectionPrediction.from_anndata(adata, key)
        for key, adata in progress(iter_partitions(own), total=len(own), desc="loading predictions")
    }


def ensemble_predictions(
    predictions: Mapping[str, Callable[[], AnnData] | AnnData],
    folds: dict[str, Any],
    gathered: dict[str, SectionPrediction],
) -> dict[str, np.ndarray]:
    """The mean prediction (normalised) of each ensemble's members on its test sections, keyed like `gathered`;
    empty unless the folds were planned with `graph.validation: rotate`."""
    heads = {(prediction.fold, prediction.section_id): key for key, prediction in gathered.items()}
    members: dict[str, list[np.ndarray]] = {}
    for key, head_and_section in sorted(_member_keys(folds).items()):
        if key not in predictions or head_and_section not in heads:
            raise ValueError(
                f"No prediction '{key}' of a rotated member fold, or none of its ensemble's head fold "
                f"{head_and_section[0]}: run the train pipeline with the same params first."
            )
        head = heads[head_and_section]
        member = SectionPrediction.from_anndata(load_partition(predictions[key]), key)
        if member.genes != gathered[head].genes or member.spot_ids != gathered[head].spot_ids:
            raise ValueError(f"The predictions '{key}' and '{head}' cover different genes or spots.")
        members.setdefault(head, [gathered[head].predicted]).append(member.predicted)
    # members fit their targets on the same sections, so their normalised scales agree
    return {head: np.mean(stack, axis=0) for head, stack in members.items()}


def describe_run(gathered: dict[str, SectionPrediction], folds: dict[str, Any]) -> dict[str, Any]:
    """The run description every table and figure states: data, panel, transform, folds, encoder."""
    first = next(iter(gathered.values())).uns
    panel_sizes = sorted({len(p.genes) for p in gathered.values()})
    test_sections: dict[str, list[str]] = {}
    for prediction in gathered.values():
        test_sections.setdefault(prediction.fold, []).append(prediction.section_id)
    return {
        "dataset": str(first.get(Uns.DATASET, "unknown")),
        "encoder": str(first.get(Uns.ENCODER, "unknown")),
        "fold_scheme": str(first.get(Uns.FOLD_SCHEME, folds.get("scheme", "unknown"))),
        "target_transform": str(first.get(Uns.TARGET_TRANSFORM, "unknown")),
        # panels are computed per fold from training sections, so sizes may differ
        "n_genes_panel": panel_sizes[0] if len(panel_sizes) == 1 else f"{panel_sizes[0]}-{panel_sizes[-1]}",
        "n_folds": len(test_sections),
        "folds": test_sections,
    }


def describe_run_text(run_info: dict[str, Any]) -> str:
    """One-line caption of the run description for figure titles."""
    return (
        f"data {run_info['dataset']}, {run_info['n_genes_panel']} genes, target {run_info['target_transform']}, "
        f"folds {run_info['fold_scheme']} ({run_info['n_folds']}), encoder {run_info['encoder']}"
    )


def with_run_info(table: pd.DataFrame, run_info: dict[str, Any]) -> pd.DataFrame:
    """Append the run description as constant columns."""
    return table.assign(**{column: str(run_info[column]) for column in RUN_INFO_COLUMNS})
