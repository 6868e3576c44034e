"""Section graphs that scale with the data, not with folds x sections (design.md §3).

A fold's graph of a section is mostly data every fold shares: the section's embeddings,
expression and spatial edges, and the embeddings and expression of the reference spots
it retrieves. Only the standardisation, the gene panel with its min-max statistics and
the retrieval links (which reference spots, the refer and close edges) belong to the
fold. `SectionGraphs` keeps those parts apart and assembles a `HeteroData` when a graph is
asked for, so the stored graph stage is one copy of each section plus small per-fold
records, and the 32-section leave-one-section-out protocol is not 1,024 full graphs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache, partial
from typing import Any

import numpy as np

from spahgc_kedro.graph import FoldReferences, fold_plan_key, graph_from_parts, spatial_edges
from spahgc_kedro.hints import HeteroData

ROLES = ("train", "validation", "test")

SectionParts = Callable[[str], dict[str, Any]]
FoldParts = Callable[[str], dict[str, Any]]
LinkParts = Callable[[str, str], dict[str, Any]]


class SectionGraphs(Mapping[str, Callable[[], HeteroData]]):
    """`{"<fold>/<section>": loader}`: each loader assembles that graph from its parts.

    - `plans`: `{fold: {train, validation, test}}` as in `folds.json`;
    - `genes`: the columns of every section's `expression` (the union of the folds' panels);
    - `section(s)`: `{embedding [N, D] float32 (raw), expression [N, G] float32 (transformed,
      unscaled), positions [N, 2], near_edges [2, E], spot_ids}`;
    - `fold(f)`: `{mean, std (the standardisation), genes, min, max, transform}`;
    - `links(f, s)`: `FoldReferences.links` (`reference_sections`, `section_index`, `spot_index`,
      `refer_source`, `close_edges`).
    The graph stage builds the parts from the sections (`fold_section_graphs`); the catalog's
    `SectionGraphStore` writes them once and reads them back as the same mapping.
    """

    def __init__(
        self,
        plans: dict[str, dict[str, list[str]]],
        genes: list[str],
        section: SectionParts,
        fold: FoldParts,
        links: LinkParts,
    ) -> None:
        self.plans, self.genes = plans, list(genes)
        self.section, self.fold, self.links = section, fold, links
        self._roles = {
            f"{name}/{section_id}": (name, section_id, role)
            for name, plan in plans.items()
            for role in ROLES
            for section_id in plan.get(role, [])
        }
        self._columns = {gene: i for i, gene in enumerate(self.genes)}

    def __getitem__(self, key: str) -> Callable[[], HeteroData]:
        name, section_id, _ = self._roles[key]
        return partial(self.graph, name, section_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._roles)

    def __len__(self) -> int:
        return len(self._roles)

    def sections(self) -> list[str]:
        """Every section some fold has a graph of, in first-seen order."""
        return list(dict.fromkeys(section_id for _, section_id, _ in self._roles.values()))

    def _scalers(self, name: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
        """Fold `name`'s standardisation of raw embeddings and min-max scaling of stored expression (float32)."""
        from spahgc_kedro.targets import minmax_scale

        fold = self.fold(name)
        columns = np.array([self._columns[gene] for gene in fold["genes"]], dtype=np.int64)

        def standardise(raw: np.ndarray) -> np.ndarray:
            standardised = np.asarray(raw) - fold["mean"]
            standardised /= fold["std"]
            return standardised

        def targets(expression: np.ndarray) -> np.ndarray:
            return minmax_scale(np.asarray(expression)[:, columns], fold["min"], fold["max"])

        return standardise, targets

    def target_arrays(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Graph `key`'s raw embeddings (as `graph.raw_embeddings` gives them) and targets, without its references."""
        name, section_id, _ = self._roles[key]
        fold, section = self.fold(name), self.section(section_id)
        standardise, targets = self._scalers(name)
        # through the standardised values, as the graph holds them, so both paths give the same bits
        raw = standardise(section["embedding"])
        raw *= fold["std"]
        raw += fold["mean"]
        return raw, targets(section["expression"])

    def reference_features(
        self, name: str, link: dict[str, Any], dim: int, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Fold `name`'s features `[M, dim + G]` of the reference nodes `link` names (of `rows` of them, when given):
        standardised embeddings || min-max scaled expression, read from their sections."""
        standardise, targets = self._scalers(name)
        section_index, spot_index = link["section_index"], link["spot_index"]
        if rows is not None:
            section_index, spot_index = section_index[rows], spot_index[rows]
        features = np.empty((section_index.shape[0], dim + len(self.fold(name)["genes"])), dtype=np.float32)
        for index, reference_id in enumerate(link["reference_sections"]):
            chosen = np.flatnonzero(section_index == index)
            if chosen.size:
                reference, spots = self.section(reference_id), spot_index[chosen]
                features[chosen, :dim] = standardise(reference["embedding"][spots])
                features[chosen, dim:] = targets(reference["expression"][spots])
        return features

    def _attributes(self, name: str, section_id: str, section: dict[str, Any], link: dict[str, Any]) -> dict:
        """The graph-level attributes of fold `name`'s graph of `section_id`."""
        import torch

        _, _, role = self._roles[f"{name}/{section_id}"]
        fold = self.fold(name)
        return {
            "section_id": section_id,
            "fold": name,
            "role": role,
            "genes": list(fold["genes"]),
            "spot_ids": list(section["spot_ids"]),
            "reference_sections": list(link["reference_sections"]),
            "embedding_dim": int(section["embedding"].shape[1]),
            # lets baselines work on the raw embeddings SpaHGC retrieves with
            "embedding_mean": torch.from_numpy(np.asarray(fold["mean"], dtype=np.float32)),
            "embedding_std": torch.from_numpy(np.asarray(fold["std"], dtype=np.float32)),
        }

    def graph(self, name: str, section_id: str) -> HeteroData:
        """Fold `name`'s graph of `section_id`, assembled from the stored parts."""
        link, section = self.links(name, section_id), self.section(section_id)
        standardise, targets = self._scalers(name)
        features = self.reference_features(name, link, section["embedding"].shape[1])
        graph = graph_from_parts(
            target_x=standardise(section["embedding"]),
            target_y=targets(section["expression"]),
            # copies: torch must not share the store's read-only memory maps
            target_pos=np.array(section["positions"]),
            near_edges=np.array(section["near_edges"]),
            reference_features=features,
            links=link,
            attributes=self._attributes(name, section_id, section, link),
        )
        graph.fold_plan = fold_plan_key(self.plans[name])
        return graph

    def num_spots(self, key: str) -> int:
        """Target spots of graph `key` (read from the store's array header, nothing loaded)."""
        return int(self.section(self._roles[key][1])["embedding"].shape[0])

    def stored(self, key: str) -> StoredSectionGraph:
        """Graph `key` left in the store: its tiles and chunks are assembled when asked for."""
        name, section_id, _ = self._roles[key]
        return StoredSectionGraph(self, name, section_id)


class StoredSectionGraph:
    """A fold's graph of one section whose features stay in the store (a section too large to hold whole).

    The skeleton (positions, reference origins, edges, attributes) is held; a tile's or a block's
    features are read from the sections when asked for, so memory follows the tile and the per-node
    states, not the section's `[N, D]` and `[M, D + G]` features. `subgraph(spots)` equals
    `training.tile_subgraph(graph, spots)` of the assembled graph, value for value (tested).
    """

    def __init__(self, graphs: SectionGraphs, fold: str, section_id: str) -> None:
        self.graphs, self.fold, self.section_id = graphs, fold, section_id
        self._skeleton: HeteroData | None = None

    def __repr__(self) -> str:
        return f"StoredSectionGraph(fold={self.fold!r}, section={self.section_id!r})"

    def skeleton(self) -> HeteroData:
        """The graph without features (zero-width `x`): positions, reference origins, edges and attributes."""
        if self._skeleton is None:
            link, section = self.graphs.links(self.fold, self.section_id), self.graphs.section(self.section_id)
            n_spots, n_references = section["embedding"].shape[0], link["spot_index"].shape[0]
            self._skeleton = graph_from_parts(
                target_x=np.empty((n_spots, 0), dtype=np.float32),
                target_y=None,
                target_pos=np.array(section["positions"]),
                near_edges=np.array(section["near_edges"]),
                reference_features=np.empty((n_references, 0), dtype=np.float32),
                links=link,
                attributes=self.graphs._attributes(self.fold, self.section_id, section, link),
            )
            self._skeleton.fold_plan = fold_plan_key(self.graphs.plans[self.fold])
        return self._skeleton

    @property
    def num_spots(self) -> int:
        """Target spots of the section."""
        return self.skeleton()["target"].num_nodes

    @property
    def n_genes(self) -> int:
        """Genes of the fold's panel."""
        return len(self.skeleton().genes)

    @property
    def embedding_dim(self) -> int:
        """Width of the target features."""
        return int(self.skeleton().embedding_dim)

    def target_features(self, rows: np.ndarray) -> np.ndarray:
        """Standardised embeddings of the section's spots `rows`."""
        standardise, _ = self.graphs._scalers(self.fold)
        # row-major, as the assembled graph holds them: reductions over a column-major copy round differently
        return np.ascontiguousarray(standardise(self.graphs.section(self.section_id)["embedding"][rows]))

    def targets(self, rows: np.ndarray) -> np.ndarray:
        """Min-max scaled targets of the section's spots `rows` (their embeddings are not read)."""
        _, targets = self.graphs._scalers(self.fold)
        return np.ascontiguousarray(targets(self.graphs.section(self.section_id)["expression"][rows]))

    def reference_rows(self, references: Any, rows: np.ndarray | None = None) -> np.ndarray:
        """Features of the reference nodes of `references` (the skeleton's reference store or a tile's; `rows` of
        them when given), read through their section and spot indices."""
        link = {name: references[name].numpy() for name in ("section_index", "spot_index")}
        link["reference_sections"] = self.skeleton().reference_sections
        return self.graphs.reference_features(self.fold, link, self.embedding_dim, rows)

    def subgraph(self, spots: Any) -> HeteroData:
        """The tile of target `spots` (sorted indices) with the references they retrieved, features filled in."""
        import torch

        from spahgc_kedro.model.training import tile_subgraph

        tile = tile_subgraph(self.skeleton(), spots)
        rows = spots.numpy()
        tile["target"].x = torch.from_numpy(self.target_features(rows))
        tile["target"].y = torch.from_numpy(self.targets(rows))
        tile["reference"].x = torch.from_numpy(self.reference_rows(tile["reference"]))
        return tile

    def input_blocks(self, block: int) -> Iterator[dict[str, Any]]:
        """`{target, reference}` feature rows in blocks of `block` nodes each, in node order, until both end."""
        import torch

        n_references = self.skeleton()["reference"].num_nodes
        for start in range(0, max(self.num_spots, n_references), block):
            spots = np.arange(start, min(start + block, self.num_spots))
            references = np.arange(start, min(start + block, n_references))
            yield {
                "target": torch.from_numpy(self.target_features(spots)),
                "reference": torch.from_numpy(self.reference_rows(self.skeleton()["reference"], references)),
            }

    def feature_sources_digest(self, digest: Any) -> None:
        """Feed `digest` what the features are made of: the fold's scaling and the embeddings and expression of
        the section and of its reference sections (read in blocks, never copied whole)."""
        fold = self.graphs.fold(self.fold)
        digest.update(repr({key: fold[key] for key in ("genes", "transform")}).encode())
        for key in ("mean", "std", "min", "max"):
            digest.update(np.ascontiguousarray(fold[key], dtype=np.float32).tobytes())
        for section_id in [self.section_id, *self.skeleton().reference_sections]:
            section = self.graphs.section(section_id)
            for name in ("embedding", "expression"):
                _digest_array(digest, section[name])

    def labelled(self) -> HeteroData:
        """The skeleton with every spot's targets as `target.y` (what predictions are stored next to)."""
        import torch

        labelled = copy.copy(self.skeleton())
        labelled["target"].y = torch.from_numpy(self.targets(np.arange(self.num_spots)))
        return labelled


def _digest_array(digest: Any, values: np.ndarray, block_bytes: int = 64 * 2**20) -> None:
    """Feed an array's dtype, shape and bytes to `digest`; a memory-mapped one from its file, block by block."""
    digest.update(f"{values.dtype}{values.shape}".encode())
    if isinstance(values, np.memmap) and values.filename and values.flags.c_contiguous:
        with open(values.filename, "rb") as file:
            file.seek(values.offset)
            remaining = values.nbytes
            while remaining:
                block = file.read(min(block_bytes, remaining))
                if not block:
                    raise OSError(f"'{values.filename}' is shorter than its header says: re-run the graph pipeline.")
                digest.update(block)
                remaining -= len(block)
    else:
        # in blocks of the array's own bytes: a spilled or large array is never copied whole
        flat = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
        for start in range(0, flat.size, block_bytes):
            digest.update(flat[start : start + block_bytes])


def section_targets(section_graphs: Mapping[str, Callable[[], HeteroData]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Graph `key`'s raw embeddings and targets: from a store's parts (no references assembled), else its graph."""
    from spahgc_kedro.graph import raw_embeddings
    from spahgc_kedro.partitions import load_partition

    if isinstance(section_graphs, SectionGraphs):
        return section_graphs.target_arrays(key)
    graph = load_partition(section_graphs[key])
    return raw_embeddings(graph), graph["target"].y.numpy()


def panel_union(target_scaling: dict[str, Any]) -> list[str]:
    """Every fold's panel genes, in first-seen order: the expression columns stored once per section."""
    return list(dict.fromkeys(gene for scaling in target_scaling.values() for gene in scaling["genes"]))


def fold_section_graphs(
    folds: dict[str, Any],
    target_scaling: dict[str, Any],
    embeddings: dict[str, np.ndarray],
    expression: Callable[[str, list[str], str], np.ndarray],
    spot_ids: dict[str, list[str]],
    positions: dict[str, np.ndarray],
    spatial_radius: dict[str, float],
    neighbours: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    params: dict[str, Any],
) -> SectionGraphs:
    """The graph stage's `SectionGraphs`: parts computed on demand, one fold's references at a time.

    `expression(section_id, genes, transform)` gives transformed, unscaled targets; the
    transform is the run's (`graph.target_transform`), the same in every fold.
    """
    transforms = {scaling["transform"] for scaling in target_scaling.values()}
    if len(transforms) > 1:
        raise ValueError(
            f"The folds' target scalings use different transforms {sorted(transforms)}: re-run the graph stage."
        )
    genes = panel_union(target_scaling)
    transform = next(iter(transforms), "log10")

    @lru_cache(maxsize=1)
    def references(name: str) -> FoldReferences:
        return FoldReferences.fit(
            name, folds["folds"][name], target_scaling[name], embeddings, expression, params, neighbours
        )

    def section(section_id: str) -> dict[str, Any]:
        return {
            "embedding": embeddings[section_id],
            "expression": expression(section_id, genes, transform),
            "positions": positions[section_id],
            "near_edges": spatial_edges(
                positions[section_id], spatial_radius[section_id], params["max_spatial_neighbours"]
            ),
            "spot_ids": list(spot_ids[section_id]),
        }

    def fold(name: str) -> dict[str, Any]:
        scaling = target_scaling[name]
        fitted = references(name)
        return {
            "mean": fitted.mean,
            "std": fitted.std,
            "genes": list(scaling["genes"]),
            "min": np.asarray(scaling["min"], dtype=np.float32),
            "max": np.asarray(scaling["max"], dtype=np.float32),
            "transform": scaling["transform"],
        }

    def links(name: str, section_id: str) -> dict[str, Any]:
        return references(name).links(section_id, embeddings[section_id])

    return SectionGraphs(folds["folds"], genes, section, fold, links)
