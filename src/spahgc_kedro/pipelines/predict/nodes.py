"""Nodes that predict expression on new sections (H&E + spots, no ST) with a trained fold model.

A new section is treated exactly like a fold's test section (graph.py): its raw
embeddings retrieve k spots from the fold's training sections, its embeddings are
standardised with the fold's training + validation statistics, and the model predicts
from the unmasked graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from spahgc_kedro.graph import (
    aligned_embedding,
    assemble_section_graph,
    merge_section_neighbours,
    nearest_neighbours,
    standardisation,
)
from spahgc_kedro.partitions import load_partition
from spahgc_kedro.pipelines.embedding.nodes import LazyEncoder, content_key, embed_section, patch_settings
from spahgc_kedro.pipelines.graph.nodes import graph_preset
from spahgc_kedro.schema import Layers, Obs, Obsm, Uns
from spahgc_kedro.targets import minmax_scale, minmax_unscale, transformed_expression

logger = logging.getLogger(__name__)

NO_MODEL_HINT = "run `kedro run --pipeline=train` first (with the same --params dataset/encoder)"


def read_new_sections(new_slides: str, predict: dict[str, Any]) -> dict[str, Any]:
    """Every new section of the folder as a standard AnnData with zero genes."""
    from spahgc_kedro.readers import get_reader

    reader = get_reader("image_spots")
    sections = {
        section_id: reader.read_section(
            new_slides,
            section_id,
            grid_spacing_px=predict["grid_spacing_px"],
            tissue_only=predict["tissue_only"],
            min_tissue_fraction=predict["min_tissue_fraction"],
            microns_per_pixel=predict.get("microns_per_pixel"),
        )
        for section_id in reader.discover_sections(new_slides)
    }
    for section_id, adata in sections.items():
        logger.info("New section %s: %d spots (%s)", section_id, adata.n_obs, adata.uns[Uns.SPOT_SOURCE])
    return sections


def choose_model_fold(trained_models: dict[str, Any], folds: dict[str, Any], predict: dict[str, Any]) -> str:
    """The fold whose model predicts: `auto` = most training sections, first by name on ties."""
    available = sorted(f for f in trained_models if f in folds["folds"])
    if not available:
        raise ValueError(
            f"No trained model matches the folds {sorted(folds['folds'])} (models: {sorted(trained_models)}): "
            f"{NO_MODEL_HINT}."
        )
    wanted = str(predict["model_fold"])
    if wanted == "auto":
        return min(available, key=lambda f: (-len(folds["folds"][f]["train"]), f))
    if wanted not in available:
        raise ValueError(
            f"predict.model_fold '{wanted}' has no trained model. Choose 'auto' or one of: {', '.join(available)}."
        )
    return wanted


def _reference_sections(folds: dict[str, Any], model_fold: str) -> tuple[list[str], list[str]]:
    """(training sections = retrieval candidates, training + validation = standardisation set)."""
    fold = folds["folds"][model_fold]
    return list(fold["train"]), list(fold["train"]) + list(fold["validation"])


def _compared_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The encoder and patch settings that must match for embeddings to be comparable."""
    # with patch_size_um the pixel side legitimately differs between sections of different scale
    if "patch_um" in settings:
        patch = {"patch_um": float(settings["patch_um"])}
    else:
        patch = {"patch_px": int(settings["patch_px"])}
    return {
        "encoder": str(settings["name"]),
        "weights": str(settings["weights_identity"]),
        "pad_value": int(settings["pad_value"]),
        **patch,
    }


def check_embedding_settings(section_id: str, new: dict[str, Any], reference: dict[str, dict[str, Any]]) -> None:
    """Fail when a new section would be embedded differently from the model's reference sections."""
    expected = _compared_settings(new)
    for ref_id, settings in reference.items():
        made = _compared_settings(settings)
        if made != expected:
            differing = ", ".join(
                f"{k}: {made.get(k)!r} -> {expected.get(k)!r}"
                for k in sorted(set(made) | set(expected))
                if made.get(k) != expected.get(k)
            )
            raise ValueError(
                f"New section {section_id} would be embedded with other settings than the model's reference "
                f"section {ref_id} ({differing}). Predict with the encoder and embedding params the model was "
                "trained with (e.g. --params embedding.patch_size_px:...), or re-run the embedding, graph and "
                "train pipelines with the new settings."
            )


def embed_new_sections(
    new_sections: dict[str, Any],
    patch_embeddings: dict[str, Callable[[], Any]],
    folds: dict[str, Any],
    model_fold: str,
    encoder: str,
    device: str,
    seed: int,
    embedding: dict[str, Any],
) -> dict[str, Any]:
    """Embed the new sections' patches with the encoder and patch settings of the reference embeddings."""
    import torch

    from spahgc_kedro import encoders

    torch.manual_seed(seed)
    encoders.check_encoder_name(encoder)
    _, fitting = _reference_sections(folds, model_fold)
    missing = [s for s in fitting if s not in patch_embeddings]
    if missing:
        raise ValueError(
            f"No patch embeddings of the model's reference sections {missing}: run `kedro run --pipeline=embedding` "
            "with the same --params dataset/encoder as the trained model."
        )
    reference = {s: dict(load_partition(patch_embeddings[s]).uns[Uns.ENCODER]) for s in fitting}
    identity = encoders.weights_identity(encoder, embedding.get("weights_path"))
    lazy = LazyEncoder(encoder, device, embedding)
    embedded = {}
    for section_id, section in sorted(new_sections.items()):
        patch = patch_settings(section.uns, embedding)
        check_embedding_settings(section_id, {"name": encoder, "weights_identity": identity, **patch}, reference)
        key = content_key(section, encoder, identity, patch)
        embedded[section_id] = embed_section(section, key, patch, lazy, embedding)
    return embedded


def reference_features(
    sections: dict[str, Callable[[], Any]],
    embeddings: dict[str, np.ndarray],
    training: list[str],
    fitting: list[str],
    scaling: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(mean, std) of the fitting embeddings and `[embedding || scaled expression]` per training section."""
    mean, std = standardisation([embeddings[s] for s in fitting])
    references = []
    for section_id in training:
        section = load_partition(sections[section_id])
        expression = transformed_expression(section, scaling["genes"], scaling["transform"])
        scaled = minmax_scale(expression, scaling["min"], scaling["max"])
        references.append(np.hstack([(embeddings[section_id] - mean) / std, scaled]))
    return mean, std, references


def build_new_section_graphs(
    new_sections: dict[str, Any],
    new_patch_embeddings: dict[str, Any],
    sections: dict[str, Callable[[], Any]],
    patch_embeddings: dict[str, Callable[[], Any]],
    section_manifest: dict[str, Any],
    folds: dict[str, Any],
    target_scaling: dict[str, Any],
    model_fold: str,
    datasets: dict[str, Any],
    dataset: str,
    graph: dict[str, Any],
) -> dict[str, Any]:
    """One HeteroData per new section (no `y`), built like a test section of the model's fold."""
    preset = graph_preset(section_manifest, datasets, dataset)
    training, fitting = _reference_sections(folds, model_fold)
    missing = [s for s in fitting if s not in sections]
    if missing:
        raise ValueError(f"Reference sections {missing} are not in `sections`: re-run the ingestion pipeline.")
    embeddings = {
        s: aligned_embedding(load_partition(sections[s]), load_partition(patch_embeddings[s]), s) for s in fitting
    }
    mean, std, references = reference_features(sections, embeddings, training, fitting, target_scaling[model_fold])
    graphs = {}
    for section_id, section in sorted(new_sections.items()):
        raw = aligned_embedding(section, new_patch_embeddings[section_id], section_id)
        # retrieval on raw embeddings, per training section then merged, as for a test section
        per_section = [
            nearest_neighbours(
                raw, embeddings[c], min(graph["k_refer"], len(embeddings[c])), graph["metric"], graph["block_size"]
            )
            for c in training
        ]
        _, ref_section, ref_spot = merge_section_neighbours(per_section, graph["k_refer"])
        graphs[section_id] = assemble_section_graph(
            target_x=(raw - mean) / std,
            target_y=None,
            target_pos=np.asarray(section.obsm[Obsm.SPATIAL], dtype=np.float64),
            spatial_radius=float(preset["spatial_radius_spacings"]) * float(section.uns[Uns.SPOT_SPACING_PX]),
            max_spatial_neighbours=graph["max_spatial_neighbours"],
            neighbour_section=ref_section,
            neighbour_spot=ref_spot,
            reference_x=references,
            k_close=graph["k_close"],
            metric=graph["metric"],
            block_size=graph["block_size"],
            attributes={
                "section_id": section_id,
                "fold": model_fold,
                "role": "new",
                "genes": list(target_scaling[model_fold]["genes"]),
                "spot_ids": list(section.obs_names),
                "reference_sections": training,
                "embedding_dim": int(raw.shape[1]),
            },
        )
    return graphs


def predict_new_sections(
    trained_models: dict[str, Any],
    new_section_graphs: dict[str, Any],
    new_sections: dict[str, Any],
    target_scaling: dict[str, Any],
    model_fold: str,
    dataset: str,
    encoder: str,
    device: str,
) -> dict[str, Any]:
    """Predict every new section from its unmasked graph, as one AnnData partition per section."""
    import anndata as ad

    from spahgc_kedro.encoders import select_device
    from spahgc_kedro.model.training import build_model, predict

    trained, scaling = trained_models[model_fold], target_scaling[model_fold]
    config = trained["config"]
    model = build_model(config)
    model.load_state_dict(trained["state_dict"])
    target = str(select_device(device))
    predictions = {}
    for section_id, graph in sorted(new_section_graphs.items()):
        if graph.embedding_dim != config["target_dim"] or len(graph.genes) != config["n_genes"]:
            raise ValueError(
                f"The fold {model_fold} model expects {config['target_dim']}-d embeddings and {config['n_genes']} "
                f"genes; new section {section_id} has {graph.embedding_dim}-d embeddings and the fold's target "
                f"scaling {len(graph.genes)} genes: the model and the graph inputs come from different runs. "
                "Re-run the graph and train pipelines."
            )
        predicted = predict(model, graph, target).astype(np.float32)
        section = new_sections[section_id]
        adata = ad.AnnData(X=predicted)
        adata.obs_names = [str(s) for s in graph.spot_ids]
        adata.var_names = list(graph.genes)
        adata.obs[Obs.ARRAY_ROW] = section.obs[Obs.ARRAY_ROW].to_numpy()
        adata.obs[Obs.ARRAY_COL] = section.obs[Obs.ARRAY_COL].to_numpy()
        adata.layers[Layers.LOG_EXPRESSION] = minmax_unscale(predicted, scaling["min"], scaling["max"])
        adata.obsm[Obsm.SPATIAL] = np.asarray(section.obsm[Obsm.SPATIAL], dtype=np.float64)
        adata.uns.update(
            section_id=section_id,
            fold=model_fold,
            reference_sections=list(graph.reference_sections),
            dataset=dataset,
            encoder=encoder,
            target_transform=scaling["transform"],
            best_epoch=int(trained["best_epoch"]),
            mlflow_run_id=str(trained.get("mlflow_run_id") or ""),
            image_path=section.uns[Uns.IMAGE_PATH],
            image_size=list(section.uns[Uns.IMAGE_SIZE]),
            spot_source=section.uns[Uns.SPOT_SOURCE],
        )
        predictions[section_id] = adata
    return predictions


def map_genes(adata: Any, requested: list[str], n_top: int) -> list[str]:
    """Requested genes present in the panel, then the `n_top` genes whose predictions vary most."""
    present = [g for g in requested if g in adata.var_names]
    skipped = [g for g in requested if g not in adata.var_names]
    if skipped:
        logger.info("Map genes not in the model's gene panel, not mapped: %s", ", ".join(skipped))
    variance = np.asarray(adata.layers[Layers.LOG_EXPRESSION]).var(axis=0)
    ranked = [adata.var_names[i] for i in np.argsort(-variance, kind="stable")[: int(n_top)]]
    return list(dict.fromkeys([*present, *ranked]))


def prediction_map(adata: Any, genes: list[str], thumbnail_max_side: int) -> Any:
    """Predicted expression of the chosen genes over the H&E thumbnail, one gene at a time (dropdown)."""
    import plotly.graph_objects as go

    from spahgc_kedro.images import data_uri, read_thumbnail

    thumbnail, _ = read_thumbnail(adata.uns[Uns.IMAGE_PATH], thumbnail_max_side)
    width, height = (int(v) for v in adata.uns[Uns.IMAGE_SIZE])
    x, y = adata.obsm[Obsm.SPATIAL][:, 0], adata.obsm[Obsm.SPATIAL][:, 1]
    caption = (
        f"SpaHGC prediction, {adata.uns['target_transform']}(count + 1) scale; model of fold {adata.uns['fold']} "
        f"({adata.uns['dataset']}, {adata.uns['encoder']}), references {', '.join(adata.uns['reference_sections'])}"
    )
    figure = go.Figure()
    buttons = []
    for index, gene in enumerate(genes):
        figure.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="markers",
                name=gene,
                visible=index == 0,
                text=list(adata.obs_names),
                hovertemplate="%{text}: %{marker.color:.3f}<extra></extra>",
                marker={
                    "color": adata[:, gene].layers[Layers.LOG_EXPRESSION].ravel(),
                    "colorscale": "Viridis",
                    "size": 7,
                    "opacity": 0.85,
                    "colorbar": {"title": gene},
                },
            )
        )
        title = f"{gene} predicted on {adata.uns['section_id']}<br><sup>{caption}</sup>"
        buttons.append(
            {
                "label": gene,
                "method": "update",
                "args": [{"visible": [i == index for i in range(len(genes))]}, {"title.text": title}],
            }
        )
    figure.update_layout(
        title=f"{genes[0]} predicted on {adata.uns['section_id']}<br><sup>{caption}</sup>",
        images=[
            {
                "source": data_uri(thumbnail),
                "xref": "x",
                "yref": "y",
                "x": 0,
                "y": 0,
                "sizex": width,
                "sizey": height,
                "xanchor": "left",
                "yanchor": "top",
                "sizing": "stretch",
                "layer": "below",
                "opacity": 0.8,
            }
        ],
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 0, "y": 1.15, "xanchor": "left"}],
        showlegend=False,
        height=650,
        margin={"t": 130},
    )
    # image rows grow downwards; equal scales keep spots round
    figure.update_yaxes(autorange="reversed", scaleanchor="x", showgrid=False)
    figure.update_xaxes(showgrid=False)
    return figure


def plot_new_prediction_maps(new_predictions: dict[str, Any], predict: dict[str, Any]) -> dict[str, Any]:
    """One interactive map figure per new section."""
    figures = {}
    for section_id in sorted(new_predictions):
        adata = load_partition(new_predictions[section_id])
        genes = map_genes(adata, list(predict["map_genes"]), int(predict["n_map_genes"]))
        figures[section_id] = prediction_map(adata, genes, int(predict["thumbnail_max_side"]))
    return figures
