"""Nodes that train SpaHGC per fold, keep the best validation epoch and predict the test section."""

from __future__ import annotations

import logging
import math
from typing import Any

from spahgc_kedro.parallelism import in_worker_process, members, merge_groups, worker_threads
from spahgc_kedro.partitions import iter_partitions, load_partition
from spahgc_kedro.schema import Layers, Obsm, Uns
from spahgc_kedro.tracking import child_run

logger = logging.getLogger(__name__)


def graphs_by_role(section_graphs: dict[str, Any], folds: dict[str, Any], fold: str, role: str) -> list[Any]:
    """The graphs of the fold's sections with a role (train, validation, test), as `folds` lists them."""
    keys = [f"{fold}/{section}" for section in folds["folds"][fold][role]]
    missing = [key for key in keys if key not in section_graphs]
    if missing:
        raise ValueError(
            f"No graphs {missing} in section_graphs: run `kedro run --pipeline=graph` with the same params first."
        )
    return [load_partition(section_graphs[key]) for key in keys]


def _log_epoch(run_id: str | None):
    import mlflow

    def log(epoch: int, row: dict[str, float]) -> None:
        if run_id is not None:
            mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch" and not math.isnan(v)}, step=epoch)

    return log


def _log_best_model(result: Any, run_id: str | None) -> None:
    import mlflow
    import torch
    import torch_geometric

    from spahgc_kedro.model.training import build_model

    if run_id is None:
        return
    model = build_model(result.model_config)
    model.load_state_dict(result.state_dict)
    mlflow.log_dict(result.model_config, "model_config.json")
    mlflow.log_metric("best_epoch", result.best_epoch)
    # explicit requirements: inferring them would import-scan and may reach the network;
    # pickle format: a graph model has no tensor input example for the pt2 tracer
    mlflow.pytorch.log_model(
        model,
        name="model",
        serialization_format="pickle",
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"torch-geometric=={torch_geometric.__version__}",
        ],
    )


def train_fold_group(
    section_graphs: dict[str, Any],
    folds: dict[str, Any],
    train: dict[str, Any],
    seed: int,
    device: str,
    dataset: str,
    encoder: str,
    group: int = 0,
    groups: int = 1,
) -> dict[str, Any]:
    """Fit one model per fold of this work group, choosing the epoch by validation PCC only."""
    from spahgc_kedro.encoders import select_device
    from spahgc_kedro.model.training import TrainConfig, fit

    config = TrainConfig(**{**train, "seed": int(seed), "device": str(select_device(device))})
    if config.threads == 0 and in_worker_process():
        # concurrent groups would each take every core and slow each other down
        config.threads = worker_threads(groups)
    trained = {}
    for fold in members(folds["folds"], group, groups):
        train_graphs = graphs_by_role(section_graphs, folds, fold, "train")
        validation_graphs = graphs_by_role(section_graphs, folds, fold, "validation")
        if not validation_graphs:
            logger.warning("Fold %s has no validation section: the last epoch is kept.", fold)
        logger.info(
            "Fold %s: training on %d sections, validating on %s, test %s (never seen in training or selection).",
            fold,
            len(train_graphs),
            [g.section_id for g in validation_graphs],
            folds["folds"][fold]["test"],
        )
        run_name = f"{dataset}-{encoder}-{fold}"
        tags = {"dataset": dataset, "encoder": encoder, "fold": fold, "fold_scheme": folds["scheme"]}
        params = {**vars(config), **tags, **{f"sections.{k}": ",".join(v) for k, v in folds["folds"][fold].items()}}
        with child_run(run_name, params, tags) as run_id:
            result = fit(train_graphs, validation_graphs, config, on_epoch=_log_epoch(run_id))
            _log_best_model(result, run_id)
        trained[fold] = {
            "state_dict": result.state_dict,
            "config": result.model_config,
            "history": result.history,
            "best_epoch": result.best_epoch,
            "mlflow_run_id": run_id or "",
        }
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
) -> dict[str, Any]:
    """Predict each fold's test section from its unmasked graph, as AnnData partitions."""
    import anndata as ad
    import numpy as np

    from spahgc_kedro.model.training import build_model, predict

    predictions = {}
    for fold, trained in sorted(trained_models.items()):
        model = build_model(trained["config"])
        model.load_state_dict(trained["state_dict"])
        for graph in graphs_by_role(section_graphs, folds, fold, "test"):
            adata = ad.AnnData(X=predict(model, graph).astype(np.float32))
            adata.obs_names = [str(s) for s in graph.spot_ids]
            adata.var_names = list(graph.genes)
            adata.layers[Layers.MEASURED] = graph["target"].y.numpy().astype(np.float32)
            adata.obsm[Obsm.SPATIAL] = graph["target"].pos.numpy().astype(np.float64)
            adata.uns.update(
                fold=fold,
                section_id=graph.section_id,
                dataset=dataset,
                encoder=encoder,
                fold_scheme=folds["scheme"],
                target_transform=target_scaling[fold]["transform"],
                best_epoch=int(trained["best_epoch"]),
                mlflow_run_id=trained["mlflow_run_id"],
            )
            key = fold if graph.section_id == fold else f"{fold}-{graph.section_id}"
            predictions[key] = adata
    return predictions


def log_predictions(predictions: dict[str, Any]) -> None:
    """Attach each fold's predictions (h5ad) to the fold's MLflow run."""
    import tempfile
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    client = None  # created only when there is a run: a client alone makes an empty store
    for key, adata in iter_partitions(predictions):
        run_id = adata.uns.get(Uns.MLFLOW_RUN_ID)
        if not run_id:
            continue
        client = client or MlflowClient()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"predictions_{key}.h5ad"
            adata.write_h5ad(path)
            client.log_artifact(run_id, str(path), artifact_path="predictions")
