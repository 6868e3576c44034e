"""The embedded default dataset: synthetic H&E sections with legacy-ST counts, in the her2st layout.

Each section is a grid of spots over a tissue made of compartments (tumour, stroma,
immune infiltrate, adipose) with distinct colour and texture. Expression follows the
compartment mix under each spot through shared gene programs, plus a smooth spatial
field and a per-patient offset, so image -> expression is learnable and spots of one
section resemble spots of another: cross-section retrieval helps, as in real data.
Each spot's dominant compartment is written as a her2st-style region label file.
Everything is derived from fixed seeds, so the files are identical on every machine.
"""

from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SECTIONS = {"A1": "A", "A2": "A", "B1": "B", "B2": "B"}
COMPARTMENTS = ("tumour", "stroma", "immune", "adipose")
# her2st pathologist label names for the compartments (ST-pat/lbl files)
REGION_LABELS = ("invasive cancer", "connective tissue", "immune infiltrate", "adipose tissue")
N_GENES = 120
GRID = 18  # spots per side before the tissue mask
SPACING_PX = 120
MARGIN_PX = 240
# RGB of background, nuclei and texture per compartment (H&E-like purples and pinks)
_BASE = np.array([[196, 140, 190], [232, 170, 200], [214, 160, 205], [246, 236, 242]], dtype=np.float32)
_NUCLEUS = np.array([[70, 30, 110], [120, 60, 130], [45, 20, 85], [150, 90, 150]], dtype=np.float32)
_NUCLEUS_DENSITY = np.array([0.30, 0.06, 0.45, 0.02])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _gene_programs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Loadings of compartment programs, of the spatial field, baselines and gene names."""
    loadings = np.zeros((len(COMPARTMENTS), N_GENES))
    for gene in range(N_GENES):
        owner = gene % (len(COMPARTMENTS) + 1)
        if owner < len(COMPARTMENTS):  # a marker of one compartment
            loadings[owner, gene] = rng.uniform(1.5, 3.0)
        loadings[:, gene] += rng.uniform(0.0, 0.6, len(COMPARTMENTS))
    spatial = rng.normal(0.0, 0.35, N_GENES)
    baseline = rng.uniform(-2.5, 0.5, N_GENES)
    names = [f"{COMPARTMENTS[g % 5][:3].upper() if g % 5 < 4 else 'MIX'}{g:03d}" for g in range(N_GENES)]
    return loadings, spatial, baseline, names


def _render_section(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its per-pixel compartment labels."""
    from scipy.ndimage import gaussian_filter, zoom

    low = size // 40
    fields = np.stack([_smooth_field(rng, (low, low), 3.0) for _ in COMPARTMENTS]).astype(np.float32)
    fields[3] -= 0.6  # adipose is the rarest compartment
    # interpolate the fields, not the labels, so compartment borders are smooth curves
    labels = zoom(fields, (1, size / low, size / low), order=1)[:, :size, :size].argmax(0)

    grain = gaussian_filter(rng.standard_normal((size, size)), 1.6)
    grain /= grain.std()
    fibres = gaussian_filter(rng.standard_normal((size, size)), (0.8, 6.0))
    fibres /= fibres.std()
    image = _BASE[labels].copy()
    # nuclei: the high end of a fine-grained field, its share set by the compartment
    threshold = np.quantile(grain, 1.0 - _NUCLEUS_DENSITY)[labels]
    nuclei = grain > threshold
    image[nuclei] = _NUCLEUS[labels[nuclei]]
    stroma = labels == 1
    image[stroma] += (12.0 * fibres[stroma])[:, None]
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _spot_mixture(labels: np.ndarray, centres: np.ndarray, radius: int) -> np.ndarray:
    """Share of each compartment inside each spot's disc."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = (xx**2 + yy**2) <= radius**2
    mix = np.zeros((len(centres), len(COMPARTMENTS)))
    for i, (x, y) in enumerate(centres.astype(int)):
        window = labels[y - radius : y + radius + 1, x - radius : x + radius + 1][disc]
        mix[i] = np.bincount(window, minlength=len(COMPARTMENTS)) / window.size
    return mix


def generate_demo(dest: str | Path, seed: int = 7) -> Path:
    """Write the demo dataset in the her2st layout under `dest` and return it."""
    from PIL import Image

    dest = Path(dest)
    rng_programs = np.random.default_rng(seed)
    loadings, spatial_loadings, baseline, genes = _gene_programs(rng_programs)
    patient_offset = {p: rng_programs.normal(0.0, 0.25, N_GENES) for p in sorted(set(SECTIONS.values()))}
    size = 2 * MARGIN_PX + (GRID - 1) * SPACING_PX
    for index, (section, patient) in enumerate(SECTIONS.items()):
        rng = np.random.default_rng(seed * 1000 + index)
        image, labels = _render_section(rng, size)
        grid_x, grid_y = np.meshgrid(np.arange(1, GRID + 1), np.arange(1, GRID + 1))
        grid_x, grid_y = grid_x.ravel(), grid_y.ravel()
        jitter = rng.normal(0.0, 2.0, (grid_x.size, 2))
        centres = np.stack([MARGIN_PX + (grid_x - 1) * SPACING_PX, MARGIN_PX + (grid_y - 1) * SPACING_PX], 1) + jitter
        # an elliptical tissue outline keeps a few hundred spots, like a real section
        ellipse = ((grid_x - (GRID + 1) / 2) / (GRID * 0.52)) ** 2 + ((grid_y - (GRID + 1) / 2) / (GRID * 0.47)) ** 2
        keep = ellipse <= 1.0
        grid_x, grid_y, centres = grid_x[keep], grid_y[keep], centres[keep]

        mix = _spot_mixture(labels, centres, SPACING_PX // 4)
        field = _smooth_field(rng, (size // 60, size // 60), 2.0)
        spatial = field[(centres[:, 1] // 60).astype(int), (centres[:, 0] // 60).astype(int)]
        log_rate = baseline + mix @ loadings + np.outer(spatial, spatial_loadings) + patient_offset[patient]
        library = rng.lognormal(np.log(1.0), 0.3, len(centres))[:, None]
        counts = rng.poisson(np.exp(log_rate) * library * 4.0)

        spot_ids = [f"{x}x{y}" for x, y in zip(grid_x, grid_y, strict=True)]
        regions = [REGION_LABELS[i] for i in mix.argmax(1)]
        _write_section(
            dest, section, patient, counts, genes, spot_ids, grid_x, grid_y, centres, Image.fromarray(image), regions
        )
    logger.info("Generated the demo dataset (%d sections) in %s", len(SECTIONS), dest)
    return dest


def _write_section(dest, section, patient, counts, genes, spot_ids, grid_x, grid_y, centres, image, regions) -> None:
    import pandas as pd

    for sub in ("ST-cnts", "ST-spotfiles", f"ST-imgs/{patient}/{section}", "ST-pat/lbl"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(counts, index=spot_ids, columns=genes)
    buffer = io.StringIO()
    table.to_csv(buffer, sep="\t")
    # mtime=0 keeps the gzip bytes identical from run to run
    with (
        open(dest / "ST-cnts" / f"{section}.tsv.gz", "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
    ):
        gz.write(buffer.getvalue().encode())
    spots = pd.DataFrame(
        {
            "x": grid_x,
            "y": grid_y,
            "new_x": grid_x.astype(float),
            "new_y": grid_y.astype(float),
            "pixel_x": centres[:, 0].round(2),
            "pixel_y": centres[:, 1].round(2),
            "selected": 1,
        }
    )
    spots.to_csv(dest / "ST-spotfiles" / f"{section}_selection.tsv", sep="\t", index=False)
    image.save(dest / "ST-imgs" / patient / section / f"HE_{section}.jpg", quality=90)
    labels = spots[["x", "y", "pixel_x", "pixel_y"]].assign(label=regions)
    labels.insert(0, "Row.names", spot_ids)
    labels.to_csv(dest / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv", sep="\t", index=False)
