"""Embedding nodes: one frozen-encoder feature vector per spot, cached per section."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spahgc_kedro import encoders
from spahgc_kedro.parallelism import in_worker_process, members, merge_groups, worker_threads
from spahgc_kedro.partitions import load_partition
from spahgc_kedro.patches import SpotPatches, patch_size_px
from spahgc_kedro.schema import Obsm, Uns

logger = logging.getLogger(__name__)

# Bump when patch extraction changes, so caches made by older code are not reused.
PATCH_CODE_VERSION = 1


def patch_settings(section_uns: dict[str, Any], embedding: dict[str, Any]) -> dict[str, Any]:
    """Patch side in px (and um when set) and the border fill, as recorded with the embeddings."""
    settings = {"patch_px": patch_size_px(section_uns, embedding), "pad_value": int(embedding["pad_value"])}
    if embedding.get("patch_size_um") is not None:
        settings["patch_um"] = float(embedding["patch_size_um"])
    return settings


def content_key(section: Any, encoder_name: str, weights_id: str, patch: dict[str, Any]) -> str:
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
    """Builds the encoder on the first cache miss only, then reuses it for every section."""

    def __init__(self, name: str, device: str, embedding: dict[str, Any]) -> None:
        self._args = (name, device, embedding)
        self._built: tuple[encoders.Encoder, Any] | None = None

    def get(self) -> tuple[encoders.Encoder, Any]:
        """The encoder and its device, built on first use."""
        if self._built is None:
            name, device, embedding = self._args
            target = encoders.select_device(device)
            encoder = encoders.build_encoder(
                name, weights_path=embedding.get("weights_path"), allow_download=bool(embedding.get("allow_download"))
            )
            logger.info("Embedding with %s (%d-d) on %s", name, encoder.spec.dim, target)
            self._built = (encoder, target)
        return self._built


def embed_section(section: Any, key: str, patch: dict[str, Any], lazy: LazyEncoder, embedding: dict[str, Any]) -> Any:
    """Embed every spot patch of one section into an AnnData (X float32 [spots, dim])."""
    import anndata as ad

    encoder, device = lazy.get()
    section_id = str(section.uns.get(Uns.SECTION_ID, "?"))
    patches = SpotPatches(
        section.uns[Uns.IMAGE_PATH],
        section.obsm[Obsm.SPATIAL],
        patch_px=patch["patch_px"],
        output_px=encoder.spec.input_px,
        pad_value=patch["pad_value"],
        section_id=section_id,
    )
    features = encoders.encode_patches(
        encoder,
        patches,
        device,
        batch_size=int(embedding["batch_size"]),
        num_workers=int(embedding["num_workers"]),
        description=f"embed {section_id}",
    )
    result = ad.AnnData(X=features)
    result.obs_names = section.obs_names.copy()
    result.obsm[Obsm.SPATIAL] = np.asarray(section.obsm[Obsm.SPATIAL], dtype=np.float64)
    result.uns[Uns.SECTION_ID] = section_id
    result.uns[Uns.ENCODER] = {**encoder.settings(), **patch, "content_key": key}
    return result


def _embedding_or_cached(
    section_id: str, load_section: Any, cached: Any, encoder: str, lazy: LazyEncoder, embedding: dict[str, Any]
) -> Any:
    section = load_partition(load_section)
    patch = patch_settings(section.uns, embedding)
    key = content_key(section, encoder, encoders.weights_identity(encoder, embedding.get("weights_path")), patch)
    if cached is not None:
        previous = load_partition(cached)
        if previous.uns.get(Uns.ENCODER, {}).get("content_key") == key:
            logger.info("Section %s: embeddings unchanged, reusing the cached ones", section_id)
            return previous
    return embed_section(section, key, patch, lazy, embedding)


def embed_sections(
    sections: dict[str, Any],
    embedding_cache: dict[str, Any],
    encoder: str,
    device: str,
    seed: int,
    embedding: dict[str, Any],
) -> dict[str, Callable[[], Any]]:
    """Patch embeddings per section, reusing cached ones whose content key is unchanged."""
    import torch

    torch.manual_seed(seed)
    encoders.check_encoder_name(encoder)
    lazy = LazyEncoder(encoder, device, embedding)
    # lazy partitions: each section is loaded, embedded and written before the next one
    return {
        section_id: (
            lambda sid=section_id: _embedding_or_cached(
                sid, sections[sid], embedding_cache.get(sid), encoder, lazy, embedding
            )
        )
        for section_id in sorted(sections)
    }


def embed_section_group(
    sections: dict[str, Any],
    embedding_cache: dict[str, Any],
    encoder: str,
    device: str,
    seed: int,
    embedding: dict[str, Any],
    group: int = 0,
    groups: int = 1,
) -> dict[str, Any]:
    """Patch embeddings of this work group's sections, computed here so concurrent groups share the work."""
    import torch

    if in_worker_process():
        # concurrent groups would each take every core and slow each other down
        torch.set_num_threads(worker_threads(groups))
    mine = {section_id: sections[section_id] for section_id in members(sections, group, groups)}
    lazy = embed_sections(mine, embedding_cache, encoder, device, seed, embedding)
    return {section_id: load() for section_id, load in lazy.items()}


def merge_section_embeddings(*group_embeddings: dict[str, Any]) -> dict[str, Any]:
    """Every section's embeddings from the work groups, in section order."""
    return merge_groups(group_embeddings, "Sections")
