"""Embedding nodes: one frozen-encoder feature vector per spot, cached per section."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from spahgc_kedro import encoders
from spahgc_kedro.embedding import LazyEncoder, content_key, embed_section, patch_settings
from spahgc_kedro.hints import AnnData
from spahgc_kedro.parallelism import in_worker_process, members, merge_groups, worker_threads
from spahgc_kedro.partitions import load_partition
from spahgc_kedro.schema import Uns

logger = logging.getLogger(__name__)


def _embedded_or_cached(
    section_id: str, section: AnnData, cached: Callable[[], AnnData] | None, lazy: LazyEncoder, params: dict[str, Any]
) -> tuple[AnnData, bool]:
    """(the cached embeddings when their content key still matches the section, else freshly embedded ones;
    whether they came from the cache)."""
    patch = patch_settings(section.uns, params)
    weights = encoders.weights_identity(params["encoder"], params.get("weights_path"))
    key = content_key(section, params["encoder"], weights, patch)
    if cached is not None:
        try:
            previous = load_partition(cached)
        except Exception as error:  # noqa: BLE001 - a damaged cache entry is recomputed, never used
            logger.warning("Section %s: the cached embeddings cannot be read (%s); embedding again.", section_id, error)
        else:
            # the key, the section and the spots must all match: a copied or stale file is never used
            if (
                previous.uns.get(Uns.ENCODER, {}).get("content_key") == key
                and previous.uns.get(Uns.SECTION_ID) == section_id
                and list(previous.obs_names) == list(section.obs_names)
            ):
                logger.info("Section %s: embeddings unchanged, reusing the cached ones", section_id)
                return previous, True
            logger.info("Section %s: the cached embeddings are for other inputs; embedding again.", section_id)
    embedded = embed_section(section, key, patch, lazy, params)
    # one line per section: progress bars are drawn on a terminal only
    logger.info("Section %s: embedded %d spots with %s", section_id, embedded.n_obs, params["encoder"])
    return embedded, False


def embed_section_group(
    sections: dict[str, Callable[[], AnnData]],
    embedding_cache: dict[str, Callable[[], AnnData]],
    embedding_params: dict[str, Any],
    group: int = 0,
    groups: int = 1,
) -> dict[str, AnnData]:
    """Patch embeddings of this work group's sections, reusing cached ones whose content key is unchanged.

    A cache that can `store` (the catalog's CacheFolderDataset) gets each section as soon as it is
    embedded, so a run killed mid-stage re-embeds only the sections it had not finished.
    """
    import torch

    torch.manual_seed(int(embedding_params["seed"]))
    encoders.check_encoder_name(embedding_params["encoder"])
    if in_worker_process():
        # concurrent groups would each take every core and slow each other down
        torch.set_num_threads(worker_threads(groups))
    lazy = LazyEncoder(embedding_params)
    store = getattr(embedding_cache, "store", None)
    embedded = {}
    for section_id in members(sections, group, groups):
        cached = embedding_cache.get(section_id)
        embedded[section_id], reused = _embedded_or_cached(
            section_id, load_partition(sections[section_id]), cached, lazy, embedding_params
        )
        if store is not None and not reused:
            store(section_id, embedded[section_id])
    return embedded


def merge_section_embeddings(*group_embeddings: dict[str, AnnData]) -> dict[str, AnnData]:
    """Every section's embeddings from the work groups, in section order."""
    return merge_groups(group_embeddings, "Sections")
