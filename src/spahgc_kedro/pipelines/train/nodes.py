"""Nodes that train SpaHGC per fold, keep the best validation epoch and predict the test section."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from spahgc_kedro.errors import MissingInputError
from spahgc_kedro.graph_store import StoredSectionGraph
from spahgc_kedro.hints import AnnData, HeteroData
from spahgc_kedro.parallelism import in_worker_process, members, merge_groups, worker_threads
from spahgc_kedro.partitions import load_partition
from spahgc_kedro.tracking import fold_run, log_fold_predictions

logger = logging.getLogger(__name__)


def graphs_by_role(
    section_graphs: dict[str, Any], folds: dict[str, Any], fold: str, role: str, store_above: int = 0
) -> list[HeteroData | StoredSectionGraph]:
    """The graphs of the fold's sections with a role (train, validation, test), as `folds` lists them.

    With `store_above` > 0, a section of more spots than that stays in the graph store
    (`StoredSectionGraph`: trained tile by tile, predicted in chunks) instead of being assembled whole.
    """
    from spahgc_kedro.graph import fold_plan_key
    from spahgc_kedro.graph_store import SectionGraphs

    keys = [f"{fold}/{section}" for section in folds["folds"][fold][role]]
    missing = [key for key in keys if key not in section_graphs]
    if missing:
        raise MissingInputError(
            f"No graphs {missing} in section_graphs: run `kedro run --pipeline=graph` with the same params first."
        )
    stored = isinstance(section_graphs, SectionGraphs) and store_above > 0
    graphs = [
        section_graphs.stored(key)
        if stored and section_graphs.num_spots(key) > store_above
        else load_partition(section_graphs[key])
        for key in keys
    ]
    # folds.json may be newer than the graphs (a graph stage that failed after the plan changed)
    expected = fold_plan_key(folds["folds"][fold])
    plans = [graph.skeleton() if isinstance(graph, StoredSectionGraph) else graph for graph in graphs]
    stale = [key for key, graph in zip(keys, plans, strict=True) if getattr(graph, "fold_plan", None) != expected]
    if stale:
        raise MissingInputError(
            f"The graphs {stale} were built for another fold plan than folds.json's fold {fold}: the graph stage did "
            "not finish after the plan changed. Re-run `kedro run --pipeline=graph` with the same params."
        )
    return graphs


def stored_fold_model(fold_models: dict[str, Any], fold: str, key: str) -> dict[str, Any] | None:
    """The fold's stored checkpoint when it was trained under this training key; None otherwise (retrain)."""
    load = fold_models.get(fold)
    if load is None:
        return None
    try:
        checkpoint = load_partition(load)
    except Exception as error:  # noqa: BLE001 - a damaged stored model is retrained, never used
        logger.warning("Fold %s: the stored model cannot be read (%s); training again.", fold, error)
        return None
    if checkpoint.get("training_key") != key:
        logger.info("Fold %s: the stored model was trained with other settings or graphs; training again.", fold)
        return None
    return checkpoint


def train_fold_group(
    section_graphs: dict[str, Any],
    folds: dict[str, Any],
    fold_models: dict[str, Any],
    train_params: dict[str, Any],
    dataset: str,
    encoder: str,
    group: int = 0,
    groups: int = 1,
) -> dict[str, dict[str, Any]]:
    """Checkpoints of this work group's folds, each choosing its epoch by validation PCC only.

    A fold whose model is stored under the same training key (settings and graph content) is reused
    when `train.resume` is on; every other fold is trained and stored as soon as it finishes.
    """
    from spahgc_kedro.encoders import select_device
    from spahgc_kedro.model.training import FitResult, TrainConfig, fit, training_key

    config = TrainConfig.from_params(train_params, device=str(select_device(train_params["device"])))
    if config.threads == 0 and in_worker_process():
        # concurrent groups would each take every core and slow each other down
        config.threads = worker_threads(groups)
    store = getattr(fold_models, "store", None)
    trained = {}
    for fold in members(folds["folds"], group, groups):
        train_graphs = graphs_by_role(section_graphs, folds, fold, "train", config.max_full_graph_spots)
        validation_graphs = graphs_by_role(section_graphs, folds, fold, "validation", config.max_full_graph_spots)
        key = training_key(config, train_graphs, validation_graphs)
        stored = stored_fold_model(fold_models, fold, key) if config.resume else None
        tags = {"dataset": dataset, "encoder": encoder, "fold": fold, "fold_scheme": folds["scheme"]}
        sections = {f"sections.{role}": ",".join(ids) for role, ids in folds["folds"][fold].items()}
        if stored is not None:
            logger.info(
                "Fold %s: reusing the model stored for the same settings and graphs (MLflow run %s); "
                "train.resume:false retrains it.",
                fold,
                stored["mlflow_run_id"] or "none",
            )
            tags["resumed_from_run"] = stored["mlflow_run_id"]
        else:
            if not validation_graphs:
                logger.warning("Fold %s: no validation section, so the last epoch is kept.", fold)
            logger.info(
                "Fold %s: training on %d sections, validating on %s, test %s (never seen in training or selection).",
                fold,
                len(train_graphs),
                [g.section_id for g in validation_graphs],
                folds["folds"][fold]["test"],
            )
        with fold_run(f"{dataset}-{encoder}-{fold}", {**asdict(config), **tags, **sections}, tags) as run:
            if stored is not None:
                result = FitResult.from_checkpoint(stored)
                if run:
                    # the new fold run carries the reused model's curves, so runs compare in the MLflow UI
                    for row in result.history:
                        run.log_epoch(row["epoch"], row)
            else:
                result = fit(train_graphs, validation_graphs, config, on_epoch=run.log_epoch if run else None)
            if run:
                run.log_model(result)
        trained[fold] = result.to_checkpoint(run.run_id if run else "")
        if store is not None and stored is None:
            store(fold, {**trained[fold], "training_key": key})
    return trained


def merge_trained_models(folds: dict[str, Any], *group_models: dict[str, Any]) -> dict[str, Any]:
    """Every fold's trained model from the work groups, checked complete and unique."""
    merged = merge_groups(group_models, "Folds")
    missing = sorted(set(folds["folds"]) - set(merged))
    if missing:
        raise ValueError(f"No trained model for folds {missing}: a train_fold_group node did not run.")
    return merged


def predict_test_sections(
    trained_models: dict[str, Any],
    section_graphs: dict[str, Any],
    folds: dict[str, Any],
    target_scaling: dict[str, Any],
    dataset: str,
    encoder: str,
    chunk_spots: int = 0,
) -> dict[str, AnnData]:
    """Predict each fold's test section from its unmasked graph (in chunks of spots above `chunk_spots`)."""
    from spahgc_kedro.model.training import load_model, predict
    from spahgc_kedro.predictions import prediction_anndata, prediction_key
    from spahgc_kedro.schema import Uns

    predictions = {}
    for fold, checkpoint in sorted(trained_models.items()):
        model = load_model(checkpoint)
        for graph in graphs_by_role(section_graphs, folds, fold, "test", chunk_spots):
            predictions[prediction_key(fold, graph.section_id)] = prediction_anndata(
                predict(model, graph, chunk_spots=chunk_spots),
                graph.labelled() if isinstance(graph, StoredSectionGraph) else graph,
                target_scaling[fold],
                measured=True,
                **{
                    Uns.DATASET: dataset,
                    Uns.ENCODER: encoder,
                    Uns.FOLD_SCHEME: folds["scheme"],
                    Uns.BEST_EPOCH: int(checkpoint["best_epoch"]),
                    Uns.MLFLOW_RUN_ID: checkpoint["mlflow_run_id"],
                },
            )
    return predictions


def log_predictions(predictions: dict[str, Any]) -> None:
    """Attach each fold's predictions (h5ad) to the fold's MLflow run."""
    log_fold_predictions(predictions)
