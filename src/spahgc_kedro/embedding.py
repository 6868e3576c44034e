"""Patch embeddings of a section: patch settings, the cache's content key, the lazily built encoder.

Shared by the embedding pipeline (sections with ST) and the predict pipeline (new
sections), so both embed with exactly the same code and settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from spahgc_kedro import encoders
from spahgc_kedro.hints import AnnData
from spahgc_kedro.patches import SpotPatches, patch_size_px
from spahgc_kedro.schema import Obsm, Uns

__all__ = ["PATCH_CODE_VERSION", "LazyEncoder", "content_key", "embed_section", "patch_settings"]

logger = logging.getLogger(__name__)

# Bump when patch extraction changes, so caches made by older code are not reused.
PATCH_CODE_VERSION = 1


def patch_settings(section_uns: dict[str, Any], embedding: dict[str, Any]) -> dict[str, Any]:
    """Patch side in px (and um when set), border fill, context scale and views, as recorded with the embeddings."""
    settings = {"patch_px": patch_size_px(section_uns, embedding), "pad_value": int(embedding["pad_value"])}
    if embedding.get("patch_size_um") is not None:
        settings["patch_um"] = float(embedding["patch_size_um"])
    # recorded only when not the default, so embeddings cached by earlier versions keep their key
    context_scale, views = int(embedding.get("context_scale") or 1), int(embedding.get("views") or 1)
    if context_scale not in (1, 2, 3, 4, 5) or views not in (1, 8):
        raise ValueError(
            f"embedding.context_scale must be 1-5 (got {context_scale}) and embedding.views 1 or 8 (got {views})."
        )
    if context_scale > 1:
        settings["context_scale"] = context_scale
    if views > 1:
        settings["views"] = views
    return settings


def content_key(section: AnnData, encoder_name: str, weights_id: str, patch: dict[str, Any]) -> str:
    """Hash of what determines a section's embeddings: spots, image file, encoder weights, patch settings."""
    image = Path(section.uns[Uns.IMAGE_PATH])
    stat = image.stat()
    digest = hashlib.sha256()
    digest.update("\n".join(map(str, section.obs_names)).encode())
    digest.update(np.ascontiguousarray(section.obsm[Obsm.SPATIAL], dtype=np.float64).tobytes())
    described = {
        "image": [str(image.resolve()), stat.st_size, stat.st_mtime_ns],
        "encoder": [encoder_name, weights_id],
        "patch": patch,
        "code": PATCH_CODE_VERSION,
    }
    digest.update(json.dumps(described, sort_keys=True).encode())
    return digest.hexdigest()


class LazyEncoder:
    """Builds the encoder named in the embedding parameters on the first cache miss only, then reuses it."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._params = params
        self._built: tuple[encoders.Encoder, Any] | None = None

    def get(self) -> tuple[encoders.Encoder, Any]:
        """The encoder and its device, built on first use."""
        if self._built is None:
            name = self._params["encoder"]
            target = encoders.select_device(self._params["device"])
            encoder = encoders.build_encoder(
                name,
                weights_path=self._params.get("weights_path"),
                allow_download=bool(self._params.get("allow_download")),
            )
            logger.info("Embedding with %s (%d-d) on %s", name, encoder.spec.dim, target)
            self._built = (encoder, target)
        return self._built


def embed_section(
    section: AnnData, key: str, patch: dict[str, Any], lazy: LazyEncoder, embedding: dict[str, Any]
) -> AnnData:
    """Embed every spot's patch of one section into an AnnData (X float32 [spots, dim]).

    With `context_scale` s > 1 the spot's embedding is followed by that of an s times larger patch
    around it, resized to the encoder's input (TRIPLEX-style context: [spot || context], 2 dim);
    with `views` 8, each patch's embedding is the mean over its 4 rotations x 2 flips.
    """
    import anndata as ad

    encoder, device = lazy.get()
    section_id = str(section.uns.get(Uns.SECTION_ID, "?"))

    def embedded(patch_px: int, what: str) -> np.ndarray:
        n_views = int(patch.get("views", 1))
        views = []
        for view in range(n_views):
            patches = SpotPatches(
                section.uns[Uns.IMAGE_PATH],
                section.obsm[Obsm.SPATIAL],
                patch_px=patch_px,
                output_px=encoder.spec.input_px,
                pad_value=patch["pad_value"],
                section_id=section_id,
                view=view,
            )
            views.append(
                encoders.encode_patches(
                    encoder,
                    patches,
                    device,
                    batch_size=int(embedding["batch_size"]),
                    num_workers=int(embedding["num_workers"]),
                    description=f"embed {section_id}{what}" + (f", view {view + 1}/{n_views}" if n_views > 1 else ""),
                )
            )
        return np.mean(views, axis=0, dtype=np.float64).astype(np.float32) if n_views > 1 else views[0]

    features = embedded(patch["patch_px"], "")
    if patch.get("context_scale", 1) > 1:
        features = np.hstack([features, embedded(patch["patch_px"] * patch["context_scale"], " (context)")])
    result = ad.AnnData(X=features)
    result.obs_names = section.obs_names.copy()
    result.obsm[Obsm.SPATIAL] = np.asarray(section.obsm[Obsm.SPATIAL], dtype=np.float64)
    result.uns[Uns.SECTION_ID] = section_id
    result.uns[Uns.ENCODER] = {**encoder.settings(), "dim": int(features.shape[1]), **patch, "content_key": key}
    return result
