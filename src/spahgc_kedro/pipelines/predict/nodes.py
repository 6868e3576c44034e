"""Nodes that predict expression on new sections (H&E + spots, no ST) with trained fold models.

For each chosen fold model, a new section is built exactly like that fold's test section, by the
same `graph.FoldReferences`: its raw embeddings retrieve k spots from the fold's training sections,
its embeddings are standardised with the fold's training + validation statistics, and the model
predicts from the unmasked graph. By default every fold's model predicts; their mean is the
prediction and their standard deviation its uncertainty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from spahgc_kedro.embedding import LazyEncoder, content_key, embed_section, patch_settings
from spahgc_kedro.errors import InputDataError, MissingInputError, ParameterError
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


def choose_model_folds(trained_models: dict[str, Any], folds: dict[str, Any], predict: dict[str, Any]) -> list[str]:
    """The folds whose models predict: `ensemble` = every fold's model (the default), `auto` = the one with the
    most training sections (first by name on ties), or one fold by name."""
    available = sorted(f for f in trained_models if f in folds["folds"])
    if not available:
        raise MissingInputError(
            f"No trained model matches the folds {sorted(folds['folds'])} (models: {sorted(trained_models)}): "
            f"{NO_MODEL_HINT}."
        )
    wanted = str(predict["model_fold"])
    if wanted == "ensemble":
        return available
    if wanted == "auto":
        return [min(available, key=lambda f: (-len(folds["folds"][f]["train"]), f))]
    if wanted not in available:
        raise ParameterError(
            f"predict.model_fold '{wanted}' has no trained model. Choose 'ensemble', 'auto' or one of: "
            f"{', '.join(available)}."
        )
    return [wanted]


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
    model_folds: list[str],
    embedding_params: dict[str, Any],
) -> dict[str, AnnData]:
    """Embed the new sections' patches with the encoder and patch settings of the reference embeddings."""
    import torch

    from spahgc_kedro import encoders

    torch.manual_seed(int(embedding_params["seed"]))
    encoder = embedding_params["encoder"]
    encoders.check_encoder_name(encoder)
    fitting = sorted({s for f in model_folds for s in [*folds["folds"][f]["train"], *folds["folds"][f]["validation"]]})
    missing = [s for s in fitting if s not in patch_embeddings]
    if missing:
        raise MissingInputError(
            f"No patch embeddings of the models' reference sections {missing}: run `kedro run --pipeline=embedding` "
            "with the same --params dataset/encoder as the trained models."
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
    model_folds: list[str],
    graph_params: dict[str, Any],
) -> dict[str, FoldReferences]:
    """Each model's references: its fold's training sections, standardised as when the model was trained."""
    fitting = sorted({s for f in model_folds for s in [*folds["folds"][f]["train"], *folds["folds"][f]["validation"]]})
    missing = [s for s in fitting if s not in sections]
    if missing:
        raise MissingInputError(f"Reference sections {missing} are not in `sections`: re-run the ingestion pipeline.")
    loaded = {s: load_partition(sections[s]) for s in fitting}
    embeddings = {s: aligned_embedding(loaded[s], load_partition(patch_embeddings[s]), s) for s in fitting}
    return {
        fold: FoldReferences.fit(
            fold,
            folds["folds"][fold],
            target_scaling[fold],
            embeddings,
            lambda s, genes, transform: transformed_expression(loaded[s], genes, transform),
            graph_params,
        )
        for fold in model_folds
    }


def build_new_section_graphs(
    new_sections: dict[str, AnnData],
    new_patch_embeddings: dict[str, AnnData],
    model_references: dict[str, FoldReferences],
    model_graph_preset: dict[str, Any],
) -> dict[str, dict[str, HeteroData]]:
    """Per new section, one HeteroData (no `y`) per model, built like a test section of the model's fold."""
    graphs: dict[str, dict[str, HeteroData]] = {}
    for section_id, section in sorted(new_sections.items()):
        raw = aligned_embedding(section, new_patch_embeddings[section_id], section_id)
        radius = float(model_graph_preset["spatial_radius_spacings"]) * float(section.uns[Uns.SPOT_SPACING_PX])
        positions = np.asarray(section.obsm[Obsm.SPATIAL], dtype=np.float64)
        graphs[section_id] = {
            fold: references.build(section_id, raw, positions, radius, list(section.obs_names), role="new")
            for fold, references in model_references.items()
        }
    return graphs


def _fold_prediction(
    checkpoint: dict[str, Any], graph: HeteroData, fold: str, device: str, chunk_spots: int = 0
) -> np.ndarray:
    """One fold model's normalised prediction of a new section's graph, after checking they fit together."""
    from spahgc_kedro.model.training import load_model, predict

    config = checkpoint["model_config"]
    if graph.embedding_dim != config["target_dim"] or len(graph.genes) != config["n_genes"]:
        raise InputDataError(
            f"The fold {fold} model expects {config['target_dim']}-d embeddings and {config['n_genes']} genes; new "
            f"section {graph.section_id} has {graph.embedding_dim}-d embeddings and the fold's target scaling "
            f"{len(graph.genes)} genes: the model and the graph inputs come from different runs. Re-run the graph "
            "and train pipelines."
        )
    return predict(load_model(checkpoint), graph, device, chunk_spots)


def shared_panel(panels: dict[str, list[str]]) -> tuple[list[str], dict[str, list[int]]]:
    """The genes every model predicts (in the first model's order) and each model's columns of them.

    Panels chosen per fold (HVG rules) differ; the ensemble predicts the genes they share.
    """
    first, *_ = panels.values()
    genes = [g for g in first if all(g in set(panel) for panel in panels.values())]
    if not genes:
        raise InputDataError(
            f"The models of folds {sorted(panels)} share no gene: an ensemble needs common genes. Choose one model "
            "with --params predict.model_fold:<fold>."
        )
    if any(len(panel) != len(genes) for panel in panels.values()):
        logger.warning(
            "The fold models' gene panels differ (chosen per fold): the ensemble predicts the %d genes all %d share "
            "(panels of %s genes); one model predicts its whole panel with --params predict.model_fold:<fold>.",
            len(genes),
            len(panels),
            "/".join(str(n) for n in sorted({len(p) for p in panels.values()})),
        )
    columns = {fold: [panel.index(g) for g in genes] for fold, panel in panels.items()}
    return genes, columns


def predict_new_sections(
    trained_models: dict[str, Any],
    model_references: dict[str, FoldReferences],
    new_section_graphs: dict[str, dict[str, HeteroData]],
    new_sections: dict[str, AnnData],
    predict_params: dict[str, Any],
    dataset: str,
    encoder: str,
) -> dict[str, AnnData]:
    """Every new section predicted by each chosen model and their mean, with the models' spread as uncertainty.

    `layers['log_expression']` = the mean over the models on the target-transform scale,
    `layers['uncertainty']` = their standard deviation there (0 for one model), `layers['fold_<name>']` =
    each model's own prediction; `X` = the mean min-max scaled by the models' pooled training range;
    per gene, `var['mean_uncertainty']` and `var['relative_uncertainty']` (that over the sd over spots of
    the gene's prediction).
    """
    from spahgc_kedro.encoders import select_device
    from spahgc_kedro.predictions import prediction_anndata
    from spahgc_kedro.targets import minmax_scale, minmax_unscale

    device = str(select_device(predict_params["device"]))
    folds = sorted(model_references)
    genes, columns = shared_panel({f: list(model_references[f].scaling["genes"]) for f in folds})
    scaling = {
        f: {k: np.asarray(model_references[f].scaling[k], dtype=np.float64)[columns[f]] for k in ("min", "max")}
        for f in folds
    }
    # the folds' min-max ranges differ, so models are averaged on the target-transform scale
    pooled = {
        "genes": genes,
        "min": np.min([scaling[f]["min"] for f in folds], axis=0).tolist(),
        "max": np.max([scaling[f]["max"] for f in folds], axis=0).tolist(),
        "transform": model_references[folds[0]].scaling["transform"],
    }
    predictions = {}
    for section_id, graphs in sorted(new_section_graphs.items()):
        per_model = {
            fold: minmax_unscale(
                _fold_prediction(trained_models[fold], graphs[fold], fold, device, int(predict_params["chunk_spots"]))[
                    :, columns[fold]
                ],
                scaling[fold]["min"],
                scaling[fold]["max"],
            )
            for fold in folds
        }
        stacked = np.stack([per_model[f] for f in folds])
        section = new_sections[section_id]
        adata = prediction_anndata(
            minmax_scale(stacked.mean(axis=0), pooled["min"], pooled["max"]),
            graphs[folds[0]],
            pooled,
            measured=False,
            genes=genes,
            obs=section.obs[[Obs.ARRAY_ROW, Obs.ARRAY_COL]],
            **{
                Uns.FOLD: ", ".join(folds),
                Uns.REFERENCE_SECTIONS: sorted({s for f in folds for s in graphs[f].reference_sections}),
                Uns.DATASET: dataset,
                Uns.ENCODER: encoder,
                Uns.BEST_EPOCH: [int(trained_models[f]["best_epoch"]) for f in folds],
                Uns.MLFLOW_RUN_ID: [str(trained_models[f].get("mlflow_run_id") or "") for f in folds],
                Uns.IMAGE_PATH: section.uns[Uns.IMAGE_PATH],
                Uns.IMAGE_SIZE: list(section.uns[Uns.IMAGE_SIZE]),
                Uns.SPOT_SOURCE: section.uns[Uns.SPOT_SOURCE],
            },
        )
        adata.layers[Layers.LOG_EXPRESSION] = stacked.mean(axis=0).astype(np.float32)
        adata.layers[Layers.UNCERTAINTY] = stacked.std(axis=0).astype(np.float32)
        adata.var["mean_uncertainty"] = adata.layers[Layers.UNCERTAINTY].mean(axis=0)
        # relative to the gene's predicted spatial variation: this ranks genes by accuracy (benchmarks/uncertainty.py)
        spatial_sd = adata.layers[Layers.LOG_EXPRESSION].std(axis=0)
        adata.var["relative_uncertainty"] = adata.var["mean_uncertainty"] / np.maximum(spatial_sd, 1e-12)
        for fold in folds:
            adata.layers[f"fold_{fold}"] = per_model[fold].astype(np.float32)
        add_scanpy_image(adata, section, int(predict_params["thumbnail_max_side"]))
        predictions[section_id] = adata
    return predictions


def add_scanpy_image(adata: AnnData, section: AnnData, max_side: int) -> None:
    """The H&E thumbnail and its scale in scanpy's `uns['spatial'][library]` layout, so `sc.pl.spatial` draws the
    predictions over the tissue (`obsm['spatial']` stays in full-resolution pixels)."""
    from spahgc_kedro.images import read_thumbnail

    thumbnail, (width, _) = read_thumbnail(section.uns[Uns.IMAGE_PATH], max_side)
    spacing = float(section.uns.get(Uns.SPOT_SPACING_PX, float("nan")))
    diameter = float(section.uns.get(Uns.SPOT_DIAMETER_PX, float("nan")))
    adata.uns["spatial"] = {
        str(section.uns[Uns.SECTION_ID]): {
            "images": {"hires": thumbnail.astype(np.float32) / 255.0},
            "scalefactors": {
                "tissue_hires_scalef": thumbnail.shape[1] / width,
                # scanpy sizes spots by this: the section's spot diameter, else most of the spot spacing
                "spot_diameter_fullres": diameter if np.isfinite(diameter) else 0.8 * spacing,
            },
        }
    }


def map_genes(adata: AnnData, requested: list[str], n_top: int) -> list[str]:
    """Requested genes present in the panel, then the `n_top` genes whose predictions vary most."""
    present = [g for g in requested if g in adata.var_names]
    skipped = [g for g in requested if g not in adata.var_names]
    if skipped:
        logger.info("Map genes not in the model's gene panel, not mapped: %s", ", ".join(skipped))
    variance = np.asarray(adata.layers[Layers.LOG_EXPRESSION]).var(axis=0)
    ranked = [adata.var_names[i] for i in np.argsort(-variance, kind="stable")[: int(n_top)]]
    return list(dict.fromkeys([*present, *ranked]))


def map_layers(adata: AnnData, genes: list[str]) -> list[tuple[str, str, np.ndarray]]:
    """(menu label, colour-bar title, values) per map: each gene's prediction, then its spread over the models
    when more than one model predicted."""
    models = len(str(adata.uns[Uns.FOLD]).split(", "))
    layers = []
    for gene in genes:
        layers.append((gene, gene, adata[:, gene].layers[Layers.LOG_EXPRESSION].ravel()))
        if models > 1 and Layers.UNCERTAINTY in adata.layers:
            values = adata[:, gene].layers[Layers.UNCERTAINTY].ravel()
            layers.append((f"{gene}: sd over {models} models", f"{gene}<br>sd", values))
    return layers


def prediction_map(adata: AnnData, genes: list[str], thumbnail_max_side: int) -> Any:
    """Predicted expression of the chosen genes (and the models' spread) over the H&E thumbnail, one at a time."""
    import plotly.graph_objects as go

    from spahgc_kedro.images import data_uri, read_thumbnail

    thumbnail, _ = read_thumbnail(adata.uns[Uns.IMAGE_PATH], thumbnail_max_side)
    width, height = (int(v) for v in adata.uns[Uns.IMAGE_SIZE])
    x, y = adata.obsm[Obsm.SPATIAL][:, 0], adata.obsm[Obsm.SPATIAL][:, 1]
    caption = (
        f"SpaHGC prediction, {adata.uns[Uns.TARGET_TRANSFORM]}(count + 1) scale; models of folds "
        f"{adata.uns[Uns.FOLD]} ({adata.uns[Uns.DATASET]}, {adata.uns[Uns.ENCODER]}), references "
        f"{', '.join(adata.uns[Uns.REFERENCE_SECTIONS])}"
    )
    layers = map_layers(adata, genes)
    figure = go.Figure()
    buttons = []
    for index, (label, colourbar, values) in enumerate(layers):
        figure.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="markers",
                name=label,
                visible=index == 0,
                text=list(adata.obs_names),
                hovertemplate="%{text}: %{marker.color:.3f}<extra></extra>",
                marker={
                    "color": values,
                    "colorscale": "Magma" if colourbar.endswith("sd") else "Viridis",
                    "size": 7,
                    "opacity": 0.85,
                    "colorbar": {"title": colourbar},
                },
            )
        )
        title = f"{label} predicted on {adata.uns[Uns.SECTION_ID]}<br><sup>{caption}</sup>"
        buttons.append(
            {
                "label": label,
                "method": "update",
                "args": [{"visible": [i == index for i in range(len(layers))]}, {"title.text": title}],
            }
        )
    figure.update_layout(
        title=buttons[0]["args"][1]["title.text"],
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


def export_new_predictions(new_predictions: dict[str, Any], predict: dict[str, Any]) -> dict[str, Any]:
    """Each new section's prediction as a SpatialData object when `predict.spatialdata` asks for it (auto: when the
    spatialdata package is installed)."""
    from importlib.util import find_spec

    wanted = predict.get("spatialdata", "auto")
    installed = find_spec("spatialdata") is not None
    if wanted is True and not installed:
        raise ParameterError(
            'predict.spatialdata is true but the spatialdata package is not installed: pip install -e ".[spatialdata]" '
            "(or set predict.spatialdata: auto to skip the SpatialData stores)."
        )
    if wanted is False or not installed:
        if wanted == "auto":
            logger.info("SpatialData stores not written: the spatialdata package is not installed.")
        return {}
    from spahgc_kedro.predictions import prediction_spatialdata

    return {
        section_id: prediction_spatialdata(load_partition(new_predictions[section_id]), section_id)
        for section_id in sorted(new_predictions)
    }
