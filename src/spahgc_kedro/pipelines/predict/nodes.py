"""Nodes that predict expression on new sections (H&E + spots, no ST) with a trained fold model.

A new section is built exactly like a fold's test section, by the same `graph.FoldReferences`:
its raw embeddings retrieve k spots from the fold's training sections, its embeddings are
standardised with the fold's training + validation statistics, and the model predicts from
the unmasked graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from spahgc_kedro.embedding import LazyEncoder, content_key, embed_section, patch_settings
from spahgc_kedro.graph import FoldReferences, aligned_embedding
from spahgc_kedro.hints import AnnData, HeteroData
from spahgc_kedro.partitions import load_partition
from spahgc_kedro.schema import Layers, Obs, Obsm, Uns
from spahgc_kedro.targets import transformed_expression

logger = logging.getLogger(__name__)

NO_MODEL_HINT = "run `kedro run --pipeline=train` first (with the same --params dataset/encoder)"


def read_new_sections(new_slides: str, predict: dict[str, Any]) -> dict[str, AnnData]:
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
        "context_scale": int(settings.get("context_scale", 1)),
        "views": int(settings.get("views", 1)),
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
    new_sections: dict[str, AnnData],
    patch_embeddings: dict[str, Callable[[], AnnData]],
    folds: dict[str, Any],
    model_fold: str,
    embedding_params: dict[str, Any],
) -> dict[str, AnnData]:
    """Embed the new sections' patches with the encoder and patch settings of the reference embeddings."""
    import torch

    from spahgc_kedro import encoders

    torch.manual_seed(int(embedding_params["seed"]))
    encoder = embedding_params["encoder"]
    encoders.check_encoder_name(encoder)
    fold = folds["folds"][model_fold]
    fitting = [*fold["train"], *fold["validation"]]
    missing = [s for s in fitting if s not in patch_embeddings]
    if missing:
        raise ValueError(
            f"No patch embeddings of the model's reference sections {missing}: run `kedro run --pipeline=embedding` "
            "with the same --params dataset/encoder as the trained model."
        )
    reference = {s: dict(load_partition(patch_embeddings[s]).uns[Uns.ENCODER]) for s in fitting}
    identity = encoders.weights_identity(encoder, embedding_params.get("weights_path"))
    lazy = LazyEncoder(embedding_params)
    embedded = {}
    for section_id, section in sorted(new_sections.items()):
        patch = patch_settings(section.uns, embedding_params)
        check_embedding_settings(section_id, {"name": encoder, "weights_identity": identity, **patch}, reference)
        key = content_key(section, encoder, identity, patch)
        embedded[section_id] = embed_section(section, key, patch, lazy, embedding_params)
    return embedded


def fit_model_references(
    sections: dict[str, Callable[[], AnnData]],
    patch_embeddings: dict[str, Callable[[], AnnData]],
    folds: dict[str, Any],
    target_scaling: dict[str, Any],
    model_fold: str,
    graph_params: dict[str, Any],
) -> FoldReferences:
    """The model fold's references: its training sections, standardised as when the model was trained."""
    fold = folds["folds"][model_fold]
    fitting = [*fold["train"], *fold["validation"]]
    missing = [s for s in fitting if s not in sections]
    if missing:
        raise ValueError(f"Reference sections {missing} are not in `sections`: re-run the ingestion pipeline.")
    loaded = {s: load_partition(sections[s]) for s in fitting}
    embeddings = {s: aligned_embedding(loaded[s], load_partition(patch_embeddings[s]), s) for s in fitting}
    return FoldReferences.fit(
        model_fold,
        fold,
        target_scaling[model_fold],
        embeddings,
        lambda s, genes, transform: transformed_expression(loaded[s], genes, transform),
        graph_params,
    )


def build_new_section_graphs(
    new_sections: dict[str, AnnData],
    new_patch_embeddings: dict[str, AnnData],
    model_references: FoldReferences,
    model_graph_preset: dict[str, Any],
) -> dict[str, HeteroData]:
    """One HeteroData per new section (no `y`), built like a test section of the model's fold."""
    return {
        section_id: model_references.build(
            section_id,
            aligned_embedding(section, new_patch_embeddings[section_id], section_id),
            np.asarray(section.obsm[Obsm.SPATIAL], dtype=np.float64),
            float(model_graph_preset["spatial_radius_spacings"]) * float(section.uns[Uns.SPOT_SPACING_PX]),
            list(section.obs_names),
            role="new",
        )
        for section_id, section in sorted(new_sections.items())
    }


def predict_new_sections(
    trained_models: dict[str, Any],
    model_references: FoldReferences,
    new_section_graphs: dict[str, HeteroData],
    new_sections: dict[str, AnnData],
    predict_params: dict[str, Any],
    dataset: str,
    encoder: str,
) -> dict[str, AnnData]:
    """Predict every new section from its unmasked graph, as one AnnData partition per section."""
    from spahgc_kedro.encoders import select_device
    from spahgc_kedro.model.training import load_model, predict
    from spahgc_kedro.predictions import prediction_anndata

    fold = model_references.fold
    checkpoint = trained_models[fold]
    config = checkpoint["model_config"]
    model = load_model(checkpoint)
    device = str(select_device(predict_params["device"]))
    predictions = {}
    for section_id, graph in sorted(new_section_graphs.items()):
        if graph.embedding_dim != config["target_dim"] or len(graph.genes) != config["n_genes"]:
            raise ValueError(
                f"The fold {fold} model expects {config['target_dim']}-d embeddings and {config['n_genes']} "
                f"genes; new section {section_id} has {graph.embedding_dim}-d embeddings and the fold's target "
                f"scaling {len(graph.genes)} genes: the model and the graph inputs come from different runs. "
                "Re-run the graph and train pipelines."
            )
        section = new_sections[section_id]
        predictions[section_id] = prediction_anndata(
            predict(model, graph, device),
            graph,
            model_references.scaling,
            measured=False,
            obs=section.obs[[Obs.ARRAY_ROW, Obs.ARRAY_COL]],
            **{
                Uns.REFERENCE_SECTIONS: list(graph.reference_sections),
                Uns.DATASET: dataset,
                Uns.ENCODER: encoder,
                Uns.BEST_EPOCH: int(checkpoint["best_epoch"]),
                Uns.MLFLOW_RUN_ID: str(checkpoint.get("mlflow_run_id") or ""),
                Uns.IMAGE_PATH: section.uns[Uns.IMAGE_PATH],
                Uns.IMAGE_SIZE: list(section.uns[Uns.IMAGE_SIZE]),
                Uns.SPOT_SOURCE: section.uns[Uns.SPOT_SOURCE],
            },
        )
    return predictions


def map_genes(adata: AnnData, requested: list[str], n_top: int) -> list[str]:
    """Requested genes present in the panel, then the `n_top` genes whose predictions vary most."""
    present = [g for g in requested if g in adata.var_names]
    skipped = [g for g in requested if g not in adata.var_names]
    if skipped:
        logger.info("Map genes not in the model's gene panel, not mapped: %s", ", ".join(skipped))
    variance = np.asarray(adata.layers[Layers.LOG_EXPRESSION]).var(axis=0)
    ranked = [adata.var_names[i] for i in np.argsort(-variance, kind="stable")[: int(n_top)]]
    return list(dict.fromkeys([*present, *ranked]))


def prediction_map(adata: AnnData, genes: list[str], thumbnail_max_side: int) -> Any:
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
