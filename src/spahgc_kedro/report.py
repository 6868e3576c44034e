"""Figures of the interpretation stage and the per-run HTML report (thumbnails: `images.read_thumbnail`)."""

from __future__ import annotations

import html
import logging
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def _section_images(panels: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[tuple[str, str], list[int]]]:
    """One pair of layout images (measured, predicted axes) per section with a thumbnail, each image data URI
    written once; and which image indices belong to each (fold, section)."""
    images: list[dict[str, Any]] = []
    owned: dict[tuple[str, str], list[int]] = {}
    for panel in panels:
        key = (panel["fold"], panel["section_id"])
        if key in owned or not panel.get("thumbnail_uri"):
            continue
        width, height = panel["image_size"]
        owned[key] = []
        for axis in ("x", "x2"):
            owned[key].append(len(images))
            images.append(
                {
                    "source": panel["thumbnail_uri"],
                    "xref": axis,
                    "yref": axis.replace("x", "y"),
                    "x": 0,
                    "y": 0,
                    "sizex": width,
                    "sizey": height,
                    "xanchor": "left",
                    "yanchor": "top",
                    "sizing": "stretch",
                    "layer": "below",
                    "opacity": 0.8,
                    "visible": False,
                }
            )
    return images, owned


def spatial_maps_plotly(panels: list[dict[str, Any]], caption: str) -> Any:
    """Measured | predicted maps, one (fold, gene) panel at a time, picked from a dropdown."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("measured", "predicted"), horizontal_spacing=0.12)
    images, owned = _section_images(panels)
    buttons = []
    for index, panel in enumerate(panels):
        # a tenth of a pixel and 1e-4 of the 0-1 target range are below what the map can show; rounding keeps the
        # report small (full precision stays in the predictions)
        x, y = np.round(panel["spatial"][:, 0], 1), np.round(panel["spatial"][:, 1], 1)
        measured, predicted = np.round(panel["measured"], 4), np.round(panel["predicted"], 4)
        for column, (kind, values) in enumerate((("measured", measured), ("predicted", predicted))):
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="markers",
                    name=f"{panel['gene']} {kind}",
                    visible=index == 0,
                    text=panel["spot_ids"],
                    hovertemplate="%{text}: %{marker.color:.3f}<extra></extra>",
                    marker={
                        "color": values,
                        "colorscale": "Viridis",
                        "size": 7,
                        "opacity": 0.85,
                        "colorbar": {
                            "x": 0.44 if column == 0 else 1.0,
                            "len": 0.8,
                            "title": {"text": f"{kind}<br>(0-1 scaled)", "side": "right"},
                        },
                    },
                ),
                row=1,
                col=column + 1,
            )
        visible = [False] * (2 * len(panels))
        visible[2 * index : 2 * index + 2] = [True, True]
        # images are toggled, never resent: the report carries each thumbnail once
        shown = set(owned.get((panel["fold"], panel["section_id"]), []))
        title = f"{panel['gene']} on {panel['section_id']} ({panel['fold']}), PCC {panel['pcc']:.3f}"
        layout = {f"images[{i}].visible": i in shown for i in range(len(images))}
        layout["title.text"] = f"{title}<br><sup>{caption}</sup>"
        buttons.append(
            {"label": f"{panel['fold']} {panel['gene']}", "method": "update", "args": [{"visible": visible}, layout]}
        )
        if index == 0:
            for i in shown:
                images[i]["visible"] = True
            figure.update_layout(title={"text": f"{title}<br><sup>{caption}</sup>", "x": 0.0, "xanchor": "left"})
    for axis in ("yaxis", "yaxis2"):
        # Image rows grow downwards, so the y axis is reversed; equal scales keep spots round.
        figure.layout[axis].update(autorange="reversed", scaleanchor=axis.replace("yaxis", "x"), showgrid=False)
    # one y title: the right map's would sit under the left map's colourbar
    figure.layout.yaxis.title = "y (full-resolution px)"
    figure.update_xaxes(showgrid=False, title="x (full-resolution px)")
    figure.update_layout(
        images=images,
        # the menu sits above the plots, right-aligned, clear of the left-aligned title
        updatemenus=[
            {"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right", "y": 1.32, "yanchor": "top"}
        ],
        showlegend=False,
        height=660,
        margin={"t": 170},
        meta={"caption": caption, "colour": "each panel scaled to its own range"},
    )
    return figure


def spatial_maps_matplotlib(panels: list[dict[str, Any]], caption: str) -> Any:
    """A static grid of measured | predicted maps, one row per gene, over the H&E thumbnail."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.6 * len(panels)), constrained_layout=True)
    axes = figure.subplots(len(panels), 2, squeeze=False)
    for row, panel in enumerate(panels):
        for column, kind in enumerate(("measured", "predicted")):
            ax = axes[row, column]
            if panel.get("thumbnail") is not None:
                width, height = panel["image_size"]
                ax.imshow(panel["thumbnail"], extent=(0, width, height, 0), alpha=0.8)
            points = ax.scatter(panel["spatial"][:, 0], panel["spatial"][:, 1], c=panel[kind], s=12, cmap="viridis")
            if panel.get("thumbnail") is None:
                ax.invert_yaxis()
            ax.set_aspect("equal")
            ax.set_axis_off()
            suffix = f" (PCC {panel['pcc']:.2f})" if kind == "predicted" else ""
            ax.set_title(f"{panel['gene']} {kind}{suffix}", fontsize=9)
            figure.colorbar(points, ax=ax, shrink=0.7)
    figure.suptitle(f"{panels[0]['section_id']} ({panels[0]['fold']})\n{caption}", fontsize=9)
    return figure


def plotly_loader_html() -> str:
    """plotly.js embedded gzip-compressed (1.8 MB instead of 4.6 MB), so the report opens offline; the browser
    inflates it (DecompressionStream) and `plotlyReady` resolves once `Plotly` is defined."""
    import base64
    import gzip

    from plotly.offline import get_plotlyjs

    packed = base64.b64encode(gzip.compress(get_plotlyjs().encode(), compresslevel=9, mtime=0)).decode()
    return (
        "<script>window.plotlyReady = (async () => {"
        f'const packed = Uint8Array.from(atob("{packed}"), (c) => c.charCodeAt(0));'
        'const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip"));'
        'const script = document.createElement("script");'
        "script.text = await new Response(stream).text();"
        "document.head.appendChild(script);"
        "})();</script>"
    )


def figure_html(figure: Any, element_id: str) -> str:
    """A plotly figure as a div and its JSON, drawn once `plotly_loader_html`'s script has loaded plotly.js."""
    import json

    from plotly.utils import PlotlyJSONEncoder

    spec = figure.to_plotly_json()
    # an image shown on several axes (measured | predicted) is written once and referenced by index
    sources = list(dict.fromkeys(image["source"] for image in spec["layout"].get("images", [])))
    for image in spec["layout"].get("images", []):
        image["source"] = sources.index(image["source"])
    text = json.dumps({"figure": spec, "sources": sources}, cls=PlotlyJSONEncoder, separators=(",", ":"))
    # "</" would end the script element early; "<\/" is the same JSON string
    text = text.replace("</", "<\\/")
    return (
        f'<div id="{element_id}"></div>'
        f'<script type="application/json" id="{element_id}-spec">{text}</script>'
        "<script>plotlyReady.then(() => {"
        f'const spec = JSON.parse(document.getElementById("{element_id}-spec").textContent);'
        "for (const image of spec.figure.layout.images || []) image.source = spec.sources[image.source];"
        f'Plotly.newPlot("{element_id}", spec.figure.data, spec.figure.layout, {{responsive: true}});'
        "});</script>"
    )


def _table_html(table: pd.DataFrame, empty_message: str, drop: tuple[str, ...] = ()) -> str:
    """An HTML table, or a sentence when the table is empty."""
    if table is None or table.empty:
        return f"<p><em>{html.escape(empty_message)}</em></p>"
    return table.drop(columns=[c for c in drop if c in table.columns]).to_html(
        index=False, float_format=lambda v: f"{v:.4g}", na_rep="n/a", border=0, classes="table"
    )


REPORT_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>SpaHGC report: {dataset}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table.table {{ border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }}
table.table td, table.table th {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }}
.header td {{ padding: 2px 12px 2px 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>SpaHGC: spatial gene expression from H&amp;E</h1>
<table class="header">
<tr><td>Data</td><td>{dataset}</td></tr><tr><td>Gene panel</td><td>{n_genes_panel} genes</td></tr>
<tr><td>Target transform</td><td>{target_transform}</td></tr>
<tr><td>Folds</td><td>{fold_scheme} ({n_folds} folds: {folds})</td></tr>
<tr><td>Encoder</td><td>{encoder}</td></tr>
<tr><td>Models</td><td>{models}</td></tr>
<tr><td>MLflow run</td><td>{mlflow_run}</td></tr><tr><td>Generated</td><td>{generated}</td></tr></table>
<h2>SpaHGC beside the baselines</h2>
<p>PCC per gene over the test section's spots, mean over genes then test sections (ACG); HEG-50/HVG-50 use the
50 most expressed/variable genes of the test section's measured values (the field's reporting convention);
pooled PCC concatenates all test spots first (HEST-Benchmark). Genes constant in measured or predicted
values are excluded from PCC means and counted. MSE/MAE on normalised targets.</p>
<p><b>Depth.</b> With log10(count + 1) targets every gene follows the spot's depth (total counts), so per-gene PCC
rewards getting each spot's depth right. <code>depth_rank1</code> predicts one number per spot (its depth) and maps it
to every gene by a line fitted on the training spots: it knows nothing gene-specific. <code>pcc_gene_specific</code>
is the partial correlation of predicted and measured values given the measured spot depth (mean normalised target
over the panel), mean over genes then test sections: 0 for any prediction that only follows depth.</p>
{reference_lines}
{comparison_table}
{comparison_figure}
<h2>Spatial maps: measured vs predicted</h2>
<p>Each panel is coloured on its own range. Pick a fold and gene from the menu.</p>
{spatial_maps}
<h2>Agreement with annotated regions</h2>
{region_agreement}
{region_marker_scores}
<h2>Pathway enrichment of well-predicted genes</h2>
{enrichment}
</body></html>
"""


def reference_lines_html(reference_lines: dict[str, dict[str, float]]) -> str:
    """A sentence per reference line (oracle depth): figures that use test measurements, never a method."""
    oracle = reference_lines.get("oracle_depth")
    if not oracle:
        return ""
    return (
        f"<p><b>Reference line, not a method:</b> the test sections' <em>measured</em> depth through the training "
        f"spots' gene lines reaches ACG {oracle['pcc_acg']:.3f} (HEG-50 {oracle['pcc_heg50']:.3f}) with "
        f"gene-specific PCC {oracle['pcc_gene_specific']:.3f}: the most a depth-only prediction can score.</p>"
    )


# what the comparison table's columns hold, in words
COLUMN_NAMES = {
    "method": "method",
    "pcc_acg": "ACG",
    "pcc_gene_specific": "gene-specific PCC",
    "pcc_heg50": "HEG-50",
    "pcc_hvg50": "HVG-50",
    "mse": "MSE",
    "mae": "MAE",
    "pcc_pooled": "pooled PCC",
    "n_genes_pooled": "genes pooled",
    "n_constant_pooled": "constant genes (pooled)",
    "n_constant_mean": "constant genes (mean)",
    "n_pcc_gt_0_3_mean": "genes PCC > 0.3 (mean)",
    "n_pcc_gt_0_5_mean": "genes PCC > 0.5 (mean)",
    "n_test_sections": "test sections",
}


def render_report(
    run_info: dict[str, Any],
    provenance: dict[str, str],
    reference_lines: dict[str, dict[str, float]],
    comparison_table: pd.DataFrame,
    figures_html: dict[str, str],
    enrichment: pd.DataFrame,
    region_agreement: pd.DataFrame,
    region_marker_scores: pd.DataFrame,
) -> str:
    """The HTML report: run header, comparison, maps, region agreement and enrichment."""
    meta = ("dataset", "n_genes_panel", "target_transform", "fold_scheme", "encoder")
    return REPORT_TEMPLATE.format(
        **{key: html.escape(str(run_info[key])) for key in (*meta, "n_folds")},
        folds=html.escape("; ".join(f"{fold}: {', '.join(tests)}" for fold, tests in run_info["folds"].items())),
        **{key: html.escape(provenance[key]) for key in ("models", "mlflow_run", "generated")},
        reference_lines=reference_lines_html(reference_lines),
        comparison_table=_table_html(comparison_table.rename(columns=COLUMN_NAMES), "No comparison table.", meta),
        region_agreement=_table_html(region_agreement, "No region labels for the test sections: skipped.", meta),
        region_marker_scores=_table_html(region_marker_scores, "", meta) if not region_marker_scores.empty else "",
        enrichment=_table_html(
            enrichment, "No GMT gene-set files given (interpretation.enrichment.gmt_files): skipped.", meta
        ),
        **figures_html,
    )
