"""Cross-section retrieval, spatial edges and the per-section heterogeneous graph.

Reference set: a fold's *training* sections only. Training graphs retrieve from the
other training sections (a spot never retrieves itself or its own section); validation
and test graphs retrieve from all training sections, so the validation section is
built exactly like the test section and its score is an honest proxy for model
selection. Neither validation nor test expression is ever a reference feature.

Retrieval uses the raw embeddings (as the reference code does), so a section pair's
neighbours do not depend on the fold: they are computed once per ordered pair and
merged per fold (the global top-k is always inside the union of per-section top-ks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from spahgc_kedro.hints import AnnData, HeteroData
from spahgc_kedro.progress import progress
from spahgc_kedro.spill import drop_resident_pages

__all__ = [
    "FoldReferences",
    "aligned_embedding",
    "assemble_section_graph",
    "fold_plan_key",
    "graph_from_parts",
    "graph_preset",
    "merge_section_neighbours",
    "nearest_neighbours",
    "nearest_neighbours_torch",
    "pair_neighbours",
    "raw_embeddings",
    "reference_links",
    "resolve_retrieval_device",
    "retrieval_pairs",
    "spatial_edges",
    "standardisation",
]

METRICS = ("l1", "cosine")
RETRIEVAL_DEVICES = ("cpu", "cuda", "auto")


def _unit_rows(values: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    values = np.asarray(values, dtype=np.float64)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)


def _smallest_k(values: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k entries smallest by (value, id), sorted; ties break on the lower id."""
    rows = np.arange(values.shape[0])[:, None]
    if values.shape[1] > k:
        chosen = np.argpartition(values, k - 1, axis=1)[:, :k]
        kth = values[rows, chosen].max(axis=1)
        # argpartition breaks ties arbitrarily: redo the rows whose k-th value is tied.
        tied = np.flatnonzero((values <= kth[:, None]).sum(axis=1) > k)
        for row in tied:
            chosen[row] = np.lexsort((ids[row], values[row]))[:k]
        values, ids = values[rows, chosen], ids[rows, chosen]
    order = np.lexsort((ids, values), axis=1)
    return values[rows, order], ids[rows, order]


def resolve_retrieval_device(device: str | None) -> str:
    """`cpu`, `cuda` (or `cuda:N`) or `auto` (cuda when torch sees a GPU) -> the device retrieval runs on."""
    device = str(device or "cpu").lower()
    if device == "cpu":
        return device
    if device != "auto" and device.split(":")[0] != "cuda":
        raise ValueError(f"Unknown graph.retrieval_device '{device}'. Choose one of: {', '.join(RETRIEVAL_DEVICES)}.")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError(
            f"graph.retrieval_device is '{device}' but torch {torch.__version__} sees no CUDA GPU. "
            "Use --params graph.retrieval_device=cpu (exact, float64) or auto."
        )
    return device


def _check_retrieval(metric: str, k: int, n_candidates: int) -> None:
    """Fail on an unknown metric or a k that the candidates cannot supply."""
    if metric not in METRICS:
        raise ValueError(f"Unknown graph.metric '{metric}'. Choose one of: {', '.join(METRICS)}.")
    if not 0 < k <= n_candidates:
        raise ValueError(f"Cannot retrieve {k} neighbours among {n_candidates} candidates.")


def nearest_neighbours(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    metric: str = "l1",
    block_size: int = 2048,
    exclude_self: bool = False,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest candidates of every query, `(distances, indices)` `[n, k]`, nearest first.

    Distances are computed in `block_size x block_size` tiles with a running top-k, so
    memory stays O(block_size^2 + n k) whatever the sizes (float64 tiles: 2048 -> 32 MiB). Ties go to the lower index,
    which makes the result independent of the block size. `exclude_self` (queries ==
    candidates) drops each row's own index. `device` (see `resolve_retrieval_device`)
    other than cpu runs `nearest_neighbours_torch` there: float32 distances, so
    near-ties may resolve differently from this exact float64 path.
    """
    device = resolve_retrieval_device(device)
    if device != "cpu":
        return nearest_neighbours_torch(queries, candidates, k, metric, block_size, exclude_self, device)
    from scipy.spatial.distance import cdist

    _check_retrieval(metric, k, candidates.shape[0] - int(exclude_self))
    if metric == "cosine":
        queries, candidates = _unit_rows(queries), _unit_rows(candidates)
    distances = np.empty((queries.shape[0], k), dtype=np.float64)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    for q0 in range(0, queries.shape[0], block_size):
        q1 = min(q0 + block_size, queries.shape[0])
        best_d = np.empty((q1 - q0, 0), dtype=np.float64)
        best_i = np.empty((q1 - q0, 0), dtype=np.int64)
        for c0 in range(0, candidates.shape[0], block_size):
            c1 = min(c0 + block_size, candidates.shape[0])
            if metric == "l1":
                tile = cdist(queries[q0:q1], candidates[c0:c1], metric="cityblock")
            else:
                tile = 1.0 - queries[q0:q1] @ candidates[c0:c1].T
            ids = np.broadcast_to(np.arange(c0, c1, dtype=np.int64), tile.shape)
            if exclude_self:
                tile[ids == np.arange(q0, q1)[:, None]] = np.inf
            # Reduce the tile to its own k best first, so the merge never copies a tile.
            tile_d, tile_i = _smallest_k(tile, ids, k)
            best_d, best_i = _smallest_k(np.hstack([best_d, tile_d]), np.hstack([best_i, tile_i]), k)
        distances[q0:q1], indices[q0:q1] = best_d, best_i
    return distances, indices


def nearest_neighbours_torch(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    metric: str = "l1",
    block_size: int = 2048,
    exclude_self: bool = False,
    device: Any = "cuda",
) -> tuple[np.ndarray, np.ndarray]:
    """`nearest_neighbours` on a torch device (any, cpu included), in float32.

    Same blocked running top-k and lower-index tie rule, with `torch.cdist(p=1)` or
    `1 - cosine` tiles: only one query block, one candidate block, one tile and the
    block's running k best are on the device at a time (O(block_size^2 + n k) there, and
    the `[n, k]` results on the host). Float32 distances, so near-ties (closer than
    float32 rounding) may resolve differently from the float64 CPU path.
    """
    import torch

    _check_retrieval(metric, k, candidates.shape[0] - int(exclude_self))
    device = torch.device(device)
    if metric == "cosine":
        queries, candidates = _unit_rows(queries), _unit_rows(candidates)
    queries = np.asarray(queries, dtype=np.float32)
    candidates = np.asarray(candidates, dtype=np.float32)
    distances = np.empty((queries.shape[0], k), dtype=np.float64)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    with torch.inference_mode():
        for q0 in range(0, queries.shape[0], block_size):
            q1 = min(q0 + block_size, queries.shape[0])
            query = torch.from_numpy(queries[q0:q1]).to(device)
            best_d = best_i = None
            for c0 in range(0, candidates.shape[0], block_size):
                c1 = min(c0 + block_size, candidates.shape[0])
                candidate = torch.from_numpy(candidates[c0:c1]).to(device)
                if metric == "l1":
                    tile = torch.cdist(query, candidate, p=1)
                else:
                    tile = 1.0 - query @ candidate.T
                if exclude_self and q0 < c1 and c0 < q1:
                    own = torch.arange(max(q0, c0), min(q1, c1), device=device)
                    tile[own - q0, own - c0] = torch.inf
                # The running best holds lower ids than the tile and the tile's columns are in
                # id order, so a stable sort by distance breaks ties on the lower id.
                kept = 0 if best_d is None else best_d.shape[1]
                merged = tile if best_d is None else torch.cat([best_d, tile], dim=1)
                values, order = torch.sort(merged, dim=1, stable=True)
                keep = min(k, values.shape[1])
                best_d, order = values[:, :keep], order[:, :keep]
                from_tile = order - kept + c0
                best_i = (
                    from_tile
                    if best_i is None
                    else torch.where(order < kept, best_i.gather(1, order.clamp(max=kept - 1)), from_tile)
                )
            distances[q0:q1] = best_d.double().cpu().numpy()
            indices[q0:q1] = best_i.cpu().numpy()
    return distances, indices


def merge_section_neighbours(
    per_section: list[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-candidate-section `(distances, indices)` into the overall k nearest.

    Returns `(distances, section, spot)` `[n, k]`; `section` indexes `per_section`.
    Ties break on section order, then spot index.
    """
    distances = np.hstack([d for d, _ in per_section])
    spots = np.hstack([i for _, i in per_section])
    sections = np.hstack([np.full(i.shape, s, dtype=np.int64) for s, (_, i) in enumerate(per_section)])
    if distances.shape[1] < k:
        raise ValueError(
            f"Only {distances.shape[1]} candidate spots for k_refer={k}: lower graph.k_refer "
            "or use more training sections."
        )
    order = np.lexsort((spots, sections, distances), axis=1)[:, :k]
    rows = np.arange(distances.shape[0])[:, None]
    return distances[rows, order], sections[rows, order], spots[rows, order]


def spatial_edges(positions: np.ndarray, radius: float, max_neighbours: int) -> np.ndarray:
    """`[2, E]` edges neighbour -> spot within `radius`, at most `max_neighbours` per spot.

    Nearest first, ties on the lower index; no self-loops.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(np.asarray(positions, dtype=np.float64))
    pairs = tree.sparse_distance_matrix(tree, radius, output_type="ndarray")
    spot, neighbour, distance = pairs["i"], pairs["j"], pairs["v"]
    keep = spot != neighbour
    spot, neighbour, distance = spot[keep], neighbour[keep], distance[keep]
    order = np.lexsort((neighbour, distance, spot))
    spot, neighbour = spot[order], neighbour[order]
    # Rank within each spot's run of the sorted list, to keep only the nearest ones.
    starts = np.searchsorted(spot, spot, side="left")
    rank = np.arange(spot.size) - starts
    keep = rank < max_neighbours
    return np.vstack([neighbour[keep], spot[keep]]).astype(np.int64)


def standardisation(embeddings: list[np.ndarray], block: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over stacked spots; constant dimensions get std 1.

    Two passes in float64 over `block` rows at a time, so memory follows the block, not the sections (a stacked
    float64 copy of three 400,000-bin sections is 10 GB).
    """
    n_spots = sum(x.shape[0] for x in embeddings)
    mean = sum(b.sum(axis=0, dtype=np.float64) for b in _row_blocks(embeddings, block)) / n_spots
    std = np.sqrt(sum(np.square(b - mean).sum(axis=0) for b in _row_blocks(embeddings, block)) / n_spots)
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _row_blocks(arrays: list[np.ndarray], block: int) -> Iterator[np.ndarray]:
    """Each array's rows, `block` at a time; a mapped array's pages are let go once it is read."""
    for values in arrays:
        for start in range(0, values.shape[0], block):
            yield values[start : start + block]
        drop_resident_pages(values)


# a block's temporaries (rows read, standardised, stacked) are ~12 KB a row at 1024 dims: 0.2 GB (0.8 GB at 65,536)
FEATURE_BLOCK_ROWS = 16_384


def reference_links(
    neighbour_section: np.ndarray,
    neighbour_spot: np.ndarray,
    reference_x: list[np.ndarray | ReferenceRows],
    k_close: int,
    metric: str,
    block_size: int,
    retrieval_device: str = "cpu",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The retrieved spots de-duplicated, each target's links to them and their close edges; with their features.

    Returns `({section_index, spot_index, refer_source, close_edges}, features)`: `[M]` where each
    reference node comes from, `[N, k]` the reference node of each retrieved spot (nearest first),
    `[2, E]` reference-close-reference kNN edges in feature space, and the `[M, D + G]` features, read in blocks
    of rows from `reference_x` (each section's `[embedding || expression]`: an array or `ReferenceRows`).
    """
    n_spots, k_refer = neighbour_spot.shape
    offsets = np.cumsum([0] + [x.shape[0] for x in reference_x])
    keys = offsets[neighbour_section] + neighbour_spot
    unique_keys, refer_source = np.unique(keys.ravel(), return_inverse=True)
    ref_section = np.searchsorted(offsets, unique_keys, side="right") - 1
    ref_spot = unique_keys - offsets[ref_section]
    features = np.empty((unique_keys.shape[0], reference_x[0].shape[1]), dtype=np.float32)
    for index, reference in enumerate(reference_x):
        chosen = np.flatnonzero(ref_section == index)
        # in blocks of rows: a section's rows at once make several [M, D + G] temporaries (GBs at 400,000 bins)
        for start in range(0, chosen.size, FEATURE_BLOCK_ROWS):
            rows = chosen[start : start + FEATURE_BLOCK_ROWS]
            features[rows] = reference[ref_spot[rows]]

    k = min(k_close, features.shape[0] - 1)
    if k > 0:
        _, close = nearest_neighbours(
            features, features, k, metric, block_size, exclude_self=True, device=retrieval_device
        )
        close_edges = np.vstack([close.ravel(), np.repeat(np.arange(features.shape[0]), k)])
    else:
        close_edges = np.empty((2, 0), dtype=np.int64)
    links = {
        "section_index": ref_section.astype(np.int64),
        "spot_index": ref_spot.astype(np.int64),
        "refer_source": refer_source.reshape(n_spots, k_refer).astype(np.int64),
        "close_edges": close_edges.astype(np.int64),
    }
    return links, features


def graph_from_parts(
    target_x: np.ndarray,
    target_y: np.ndarray | None,
    target_pos: np.ndarray,
    near_edges: np.ndarray,
    reference_features: np.ndarray,
    links: dict[str, np.ndarray],
    attributes: dict[str, Any],
) -> HeteroData:
    """A section's `HeteroData` (design.md §3) from its targets, spatial edges and reference links, validated."""
    import torch
    from torch_geometric.data import HeteroData

    def tensor(values: np.ndarray, dtype: Any) -> Any:
        return torch.from_numpy(np.ascontiguousarray(values, dtype=dtype))

    n_spots, k_refer = links["refer_source"].shape
    data = HeteroData()
    data["target"].x = tensor(target_x, np.float32)
    if target_y is not None:
        data["target"].y = tensor(target_y, np.float32)
    data["target"].pos = tensor(target_pos, np.float32)
    data["reference"].x = tensor(reference_features, np.float32)
    data["reference"].section_index = tensor(links["section_index"], np.int64)
    data["reference"].spot_index = tensor(links["spot_index"], np.int64)
    data["target", "near", "target"].edge_index = tensor(near_edges, np.int64)
    data["reference", "refer", "target"].edge_index = tensor(
        np.vstack([links["refer_source"].reshape(-1), np.repeat(np.arange(n_spots), k_refer)]), np.int64
    )
    data["reference", "close", "reference"].edge_index = tensor(links["close_edges"], np.int64)
    for name, value in attributes.items():
        data[name] = value
    data.validate(raise_on_error=True)
    return data


def assemble_section_graph(
    target_x: np.ndarray,
    target_y: np.ndarray | None,
    target_pos: np.ndarray,
    spatial_radius: float,
    max_spatial_neighbours: int,
    neighbour_section: np.ndarray,
    neighbour_spot: np.ndarray,
    reference_x: list[np.ndarray | ReferenceRows],
    k_close: int,
    metric: str,
    block_size: int,
    attributes: dict[str, Any],
    retrieval_device: str = "cpu",
) -> HeteroData:
    """One section's `HeteroData` from arrays (design.md §3), validated.

    `neighbour_section`/`neighbour_spot` `[N, k]` name each target spot's retrieved spots
    (section = index into `reference_x`, whose entries are `[embedding || expression]`
    per reference section). Refer edges are grouped by target, nearest first, so
    `edge_index[0].view(N, k)` lists each spot's references. `target_y` None (a section
    without expression, only to predict) leaves `target.y` unset. `retrieval_device`
    runs the reference-close-reference kNN (see `nearest_neighbours`).
    """
    links, features = reference_links(
        neighbour_section, neighbour_spot, reference_x, k_close, metric, block_size, retrieval_device
    )
    near = spatial_edges(target_pos, spatial_radius, max_spatial_neighbours)
    return graph_from_parts(target_x, target_y, target_pos, near, features, links, attributes)


def graph_preset(section_manifest: dict[str, Any], datasets: dict[str, Any], dataset: str) -> dict[str, Any]:
    """Gene panel and spatial radius: the run's `datasets.<dataset>` overrides the manifest's."""
    preset = dict(section_manifest.get("preset", {}))
    live = datasets.get(dataset, {}) if dataset == section_manifest.get("dataset") else {}
    for key in ("gene_panel", "spatial_radius_spacings"):
        if key in live:
            preset[key] = live[key]
        if key not in preset:
            raise ValueError(
                f"No '{key}' for dataset '{section_manifest.get('dataset')}' in the section "
                "manifest or in parameters datasets: re-run the ingestion pipeline."
            )
    return preset


def raw_embeddings(graph: HeteroData) -> np.ndarray:
    """A graph's target embeddings before the fold's standardisation (what retrieval and the baselines use)."""
    return graph["target"].x.numpy() * graph.embedding_std.numpy() + graph.embedding_mean.numpy()


def aligned_embedding(section: AnnData, embedding: AnnData, section_id: str) -> np.ndarray:
    """The section's embeddings `[n_spots, dim]` in its spot order, matched by spot id."""
    spots, embedded = section.obs_names, embedding.obs_names
    if not spots.equals(embedded):
        if set(spots) != set(embedded):
            missing = len(set(spots) - set(embedded))
            extra = len(set(embedded) - set(spots))
            raise ValueError(
                f"Section {section_id}: patch embeddings do not match its spots ({missing} spots "
                f"without an embedding, {extra} embeddings of unknown spots). The embeddings are "
                "stale: re-run the embedding pipeline (kedro run --pipeline=embedding)."
            )
        embedding = embedding[spots]
    return np.asarray(embedding.X, dtype=np.float32)


def retrieval_pairs(folds: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (query section, candidate section) pair some fold's graphs retrieve across."""
    pairs: dict[tuple[str, str], None] = {}
    for fold in folds["folds"].values():
        for query in fold["train"] + fold["validation"] + fold["test"]:
            for candidate in fold["train"]:
                if candidate != query:
                    pairs[(query, candidate)] = None
    return list(pairs)


def pair_neighbours(
    embeddings: dict[str, np.ndarray],
    pairs: list[tuple[str, str]],
    k: int,
    metric: str,
    block_size: int,
    device: str = "cpu",
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """k nearest spots of each query section within each candidate section (fold-independent)."""

    found = {}
    for query, candidate in progress(pairs, desc="cross-section retrieval", unit="pair"):
        found[(query, candidate)] = nearest_neighbours(
            embeddings[query],
            embeddings[candidate],
            min(k, embeddings[candidate].shape[0]),
            metric,
            block_size,
            device=device,
        )
        # a pair's search reads both sections whole: mapped (spilled) ones would otherwise stay resident
        drop_resident_pages(embeddings[query])
        drop_resident_pages(embeddings[candidate])
    return found


class ReferenceRows:
    """A training section's reference features `[embedding || expression]` for a fold, made for the rows asked
    for: the standardised `[N, D]` embeddings of a whole section are never held (1.6 GB per 400,000 bins)."""

    def __init__(self, raw: np.ndarray, targets: np.ndarray, standardise: Callable[[np.ndarray], np.ndarray]) -> None:
        self.raw, self.targets, self.standardise = raw, targets, standardise
        self.shape = (raw.shape[0], raw.shape[1] + targets.shape[1])

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """The features `[len(rows), D + G]` of the section's spots `rows`."""
        features = np.hstack([self.standardise(self.raw[rows]), self.targets[rows]])
        # scattered rows touch most of a mapped section's pages: let them go, or the section stays resident
        drop_resident_pages(self.raw)
        return features


class FoldReferences:
    """One fold's reference set and how a section's graph is built against it (design.md §3).

    Made once per fold from its training sections (the only references) and the
    standardisation of its training + validation embeddings; `build` then turns any
    section's raw embeddings into its graph: a training, validation or test section in the
    graph pipeline, a new section without ST in the predict pipeline. Retrieval runs on
    `params['retrieval_device']`; `neighbours` caches `(query, candidate)` results, so the
    graph pipeline retrieves each section pair once for all folds.
    """

    def __init__(
        self,
        fold: str,
        sections: list[str],
        raw: dict[str, np.ndarray],
        standardised_mean: np.ndarray,
        standardised_std: np.ndarray,
        scaling: dict[str, Any],
        expression: Callable[[str, list[str], str], np.ndarray],
        params: dict[str, Any],
        neighbours: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.fold, self.sections, self.raw = fold, list(sections), raw
        self.mean, self.std = standardised_mean, standardised_std
        self.scaling, self.expression, self.params = scaling, expression, params
        self.neighbours = {} if neighbours is None else neighbours
        self.features = {s: ReferenceRows(raw[s], self.targets(s), self.standardise) for s in self.sections}

    @classmethod
    def fit(
        cls,
        name: str,
        fold: dict[str, list[str]],
        scaling: dict[str, Any],
        embeddings: dict[str, np.ndarray],
        expression: Callable[[str, list[str], str], np.ndarray],
        params: dict[str, Any],
        neighbours: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> FoldReferences:
        """References of fold `name`: its training sections, standardised with train + validation statistics.

        `expression(section_id, genes, transform)` gives transformed, unscaled targets.
        """
        mean, std = standardisation([embeddings[s] for s in fold["train"] + fold["validation"]])
        raw = {s: embeddings[s] for s in fold["train"]}
        return cls(name, fold["train"], raw, mean, std, scaling, expression, params, neighbours)

    @property
    def genes(self) -> list[str]:
        """The fold's gene panel."""
        return list(self.scaling["genes"])

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """Embeddings standardised with the fold's statistics."""
        return (raw - self.mean) / self.std

    def targets(self, section_id: str) -> np.ndarray:
        """A section's targets on the fold's genes, min-max scaled with the fold's statistics."""
        from .targets import minmax_scale

        values = self.expression(section_id, self.genes, self.scaling["transform"])
        return minmax_scale(values, self.scaling["min"], self.scaling["max"])

    def retrieve(self, query_id: str, query_raw: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(candidate sections, `[N, k]` section index into them, spot index): the query's k nearest references.

        A training section never retrieves from itself.
        """
        candidates = [s for s in self.sections if s != query_id]
        k = self.params["k_refer"]
        for candidate in candidates:
            if (query_id, candidate) not in self.neighbours:
                self.neighbours[(query_id, candidate)] = nearest_neighbours(
                    query_raw,
                    self.raw[candidate],
                    min(k, self.raw[candidate].shape[0]),
                    self.params["metric"],
                    self.params["block_size"],
                    device=self.params.get("retrieval_device", "cpu"),
                )
                drop_resident_pages(query_raw)
                drop_resident_pages(self.raw[candidate])
        _, section, spot = merge_section_neighbours([self.neighbours[(query_id, c)] for c in candidates], k)
        return candidates, section, spot

    def links(self, query_id: str, query_raw: np.ndarray) -> dict[str, Any]:
        """The query's `reference_links` against this fold, with `reference_sections` (what `section_index` indexes)."""
        candidates, ref_section, ref_spot = self.retrieve(query_id, query_raw)
        links, _ = reference_links(
            ref_section,
            ref_spot,
            [self.features[c] for c in candidates],
            self.params["k_close"],
            self.params["metric"],
            self.params["block_size"],
            self.params.get("retrieval_device", "cpu"),
        )
        return {**links, "reference_sections": candidates}

    def build(
        self,
        query_id: str,
        query_raw: np.ndarray,
        positions: np.ndarray,
        spatial_radius: float,
        spot_ids: list[str],
        role: str,
        target_y: np.ndarray | None = None,
    ) -> HeteroData:
        """The section's HeteroData against this fold's references (no `target.y` when `target_y` is None)."""
        import torch

        candidates, ref_section, ref_spot = self.retrieve(query_id, query_raw)
        standardised = self.standardise(query_raw)
        return assemble_section_graph(
            target_x=standardised,
            target_y=target_y,
            target_pos=positions,
            spatial_radius=spatial_radius,
            max_spatial_neighbours=self.params["max_spatial_neighbours"],
            neighbour_section=ref_section,
            neighbour_spot=ref_spot,
            reference_x=[self.features[c] for c in candidates],
            k_close=self.params["k_close"],
            metric=self.params["metric"],
            block_size=self.params["block_size"],
            retrieval_device=self.params.get("retrieval_device", "cpu"),
            attributes={
                "section_id": query_id,
                "fold": self.fold,
                "role": role,
                "genes": self.genes,
                "spot_ids": list(spot_ids),
                "reference_sections": candidates,
                "embedding_dim": int(standardised.shape[1]),
                # lets baselines work on the raw embeddings SpaHGC retrieves with
                "embedding_mean": torch.from_numpy(self.mean),
                "embedding_std": torch.from_numpy(self.std),
            },
        )


def fold_plan_key(fold: dict[str, list[str]]) -> str:
    """A short fingerprint of one fold's plan (its sections per role): a graph carries the one it was built for."""
    import hashlib
    import json

    plan = {role: list(fold.get(role, [])) for role in ("train", "validation", "test")}
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
