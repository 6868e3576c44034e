"""Training and prediction: seeded whole-section (or spatial-tile) steps, masked contrastive views, best epoch
by validation PCC."""

from __future__ import annotations

import copy
import ctypes
import logging
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from spahgc_kedro.graph_store import StoredSectionGraph
from spahgc_kedro.hints import HeteroData
from spahgc_kedro.progress import progress as progress_bar

from .contrastive import Predictor, Teacher, complementary_masks, contrastive_loss
from .spahgc import REFERENCE_EDGES, REFERENCE_NEIGHBOUR_EDGES, SPATIAL_EDGES, EdgeType, ModelConfig, SpaHGC

logger = logging.getLogger(__name__)

# a section graph held whole, or one left in the graph store (trained tile by tile, predicted in chunks)
Graph = HeteroData | StoredSectionGraph


@dataclass
class TrainConfig:
    """Optimisation and contrastive settings around a `ModelConfig` (defaults: method.md / reference code)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 200
    # stop when the validation PCC has not improved for this many epochs (0: run every epoch)
    patience: int = 0
    # after the epoch count is chosen on the validation sections, train again from the same start on the
    # training + validation sections for that many epochs (the test sections stay unseen)
    refit_on_validation: bool = False
    lr: float = 1e-4
    weight_decay: float = 1e-4
    mask_target: float = 0.1
    mask_reference: float = 0.9
    teacher: str = "ema"
    ema_decay: float = 0.99
    use_contrastive: bool = True
    # BGRL predictor on the online side; False gives the reference code's plain cosine between encoders
    use_predictor: bool = True
    w_pcc: float = 0.5
    w_target: float = 0.2
    w_reference: float = 0.1
    # weight of (1 - gene-specific PCC): the PCC loss on what remains after each spot's measured depth is
    # regressed out of predicted and measured values (docs/metrics.md); 0 = the paper's loss
    w_gene_specific: float = 0.0
    seed: int = 0
    device: str = "cpu"
    # torch intra-op threads during fit (0: leave torch's setting); on busy shared cores 1 can be much faster
    threads: int = 0
    # reuse a fold's stored model when its training key is unchanged (a rerun trains only unfinished folds)
    resume: bool = True
    # a section with more target spots trains on spatial tiles of at most this many spots (one step per
    # tile: the tile's spots, their retrieved references and the edges among them) and is validated in
    # chunks of this many spots; 0: every section trains whole
    max_full_graph_spots: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> TrainConfig:
        """From the `train` parameters (architecture under `model`), with `overrides` on top."""
        values = {**params, **overrides}
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"Unknown train parameters {unknown}: the architecture goes under train.model.")
        return cls(**{**values, "model": ModelConfig(**dict(values.get("model") or {}))})


@dataclass
class FitResult:
    """The best epoch's online-model weights (CPU), the dimensions and config that rebuild it, per-epoch history."""

    state_dict: dict
    target_dim: int
    n_genes: int
    model: ModelConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0

    def to_checkpoint(self, mlflow_run_id: str = "") -> dict[str, Any]:
        """The checkpoint as plain types and tensors (so `torch.load(weights_only=True)` reads it back)."""
        return {
            "state_dict": self.state_dict,
            "model_config": {"target_dim": self.target_dim, "n_genes": self.n_genes, **asdict(self.model)},
            "history": self.history,
            "best_epoch": self.best_epoch,
            "mlflow_run_id": mlflow_run_id,
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> FitResult:
        """The result a checkpoint was made from (`to_checkpoint`'s inverse)."""
        model_config = dict(checkpoint["model_config"])
        target_dim, n_genes = model_config.pop("target_dim"), model_config.pop("n_genes")
        return cls(
            state_dict=checkpoint["state_dict"],
            target_dim=int(target_dim),
            n_genes=int(n_genes),
            model=ModelConfig(**model_config),
            history=list(checkpoint["history"]),
            best_epoch=int(checkpoint["best_epoch"]),
        )


# settings that change where or how fast a model trains, or whether it is reused, not which model it becomes
RUN_ONLY_SETTINGS = ("device", "threads", "resume")


def training_key(config: TrainConfig, train_graphs: list[Graph], validation_graphs: list[Graph]) -> str:
    """A fingerprint of what a fold's model depends on: its config, the model code and every training and
    validation graph's content.

    The device and thread count are left out: a model trained on a GPU is reused on a CPU run.
    """
    import hashlib
    import json
    from pathlib import Path

    settings = {k: v for k, v in asdict(config).items() if k not in RUN_ONLY_SETTINGS}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    # a model trained by other model or training code is never reused
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    for role, graphs in (("train", train_graphs), ("validation", validation_graphs)):
        digest.update(role.encode())
        for graph in graphs:
            if isinstance(graph, StoredSectionGraph):
                # the features' sources stand in for the features, which are never assembled whole
                _digest_graph(digest, graph.skeleton())
                graph.feature_sources_digest(digest)
            else:
                _digest_graph(digest, graph)
    return digest.hexdigest()[:16]


def _digest_graph(digest: Any, graph: HeteroData) -> None:
    """Feed every store's every attribute (name, dtype, shape, bytes) of `graph` to `digest`."""
    for store in graph.stores:
        for name in sorted(store.keys()):
            value = store[name]
            digest.update(f"{getattr(store, '_key', None)}.{name}".encode())
            if isinstance(value, Tensor):
                digest.update(str(value.dtype).encode() + str(tuple(value.shape)).encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            else:
                digest.update(repr(value).encode())


def load_model(checkpoint: dict[str, Any]) -> SpaHGC:
    """The trained SpaHGC of a checkpoint (`FitResult.to_checkpoint`), in eval mode."""
    model = SpaHGC(**checkpoint["model_config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch, and ask torch for deterministic kernels (warn where none exists)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pcc_per_gene(pred: Tensor, target: Tensor) -> Tensor:
    """Pearson correlation per gene over spots [G]; NaN where either side is constant (so nanmean excludes it)."""
    pred_centred = pred - pred.mean(dim=0)
    target_centred = target - target.mean(dim=0)
    covariance = (pred_centred * target_centred).sum(dim=0)
    variance_product = (pred_centred.square().sum(dim=0)) * (target_centred.square().sum(dim=0))
    defined = variance_product > 1e-12
    # clamp keeps the sqrt gradient finite for the constant genes that are then dropped
    pcc = covariance / variance_product.clamp_min(1e-12).sqrt()
    return torch.where(defined, pcc, torch.full_like(pcc, float("nan")))


def _mean_pcc(pred: Tensor, target: Tensor) -> Tensor:
    """Mean PCC over the genes where it is defined; 0 when none is."""
    pcc = pcc_per_gene(pred, target)
    defined = ~pcc.isnan()
    if not defined.any():
        return pred.new_zeros(())
    return pcc[defined].mean()


def depth_residuals(values: Tensor, depth: Tensor) -> Tensor:
    """Each column of `values` minus its least-squares fit on [1, depth] (depth: one number per spot)."""
    design = torch.stack([torch.ones_like(depth), depth], dim=1)
    return values - design @ (torch.linalg.pinv(design) @ values)


def gene_specific_pcc(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over genes of the partial correlation of `pred` and `target` given the target's spot depth
    (the metric `metrics.gene_specific_pcc`, differentiable); 0 when no gene has one."""
    depth = target.mean(dim=1)
    return _mean_pcc(depth_residuals(pred, depth), depth_residuals(target, depth))


def _inspected(graph: Graph) -> HeteroData:
    """The graph, or for one left in the store a tile of its first spots: what the shape checks read."""
    if isinstance(graph, StoredSectionGraph):
        return graph.subgraph(torch.arange(min(graph.num_spots, 8)))
    return graph


def _describe(graph: HeteroData) -> str:
    return f"section {getattr(graph, 'section_id', '?')!r} (fold {getattr(graph, 'fold', '?')!r})"


def _check_graph(graph: HeteroData, target_dim: int, n_genes: int, need_y: bool) -> None:
    """Fail early, naming the section, when a graph does not match the first training graph's shapes."""
    x_target = graph["target"].x
    if x_target.dim() != 2 or x_target.shape[1] != target_dim:
        raise ValueError(
            f"{_describe(graph)}: target.x has shape {tuple(x_target.shape)}, expected [N, {target_dim}]; "
            "rebuild the fold's graphs with one embedding encoder"
        )
    x_reference = graph["reference"].x
    if x_reference.shape[1] != target_dim + n_genes:
        raise ValueError(
            f"{_describe(graph)}: reference.x has {x_reference.shape[1]} columns, expected "
            f"{target_dim} + {n_genes} (embedding || expression); rebuild the fold's graphs with one gene panel"
        )
    if need_y and ("y" not in graph["target"] or tuple(graph["target"].y.shape) != (x_target.shape[0], n_genes)):
        raise ValueError(f"{_describe(graph)}: target.y missing or not [N, {n_genes}]; training graphs need labels")


def _train_step(
    model: SpaHGC,
    graph: HeteroData,
    config: TrainConfig,
    teacher: Teacher | None,
    predictor: Predictor | None,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Loss terms for one section: supervised on view 1 (or unmasked), contrastive view 1 vs teacher view 2."""
    y = graph["target"].y
    edge_index_dict = graph.edge_index_dict
    if teacher is None:
        h_online = model.encode(graph.x_dict, edge_index_dict)
        contrastive = {"target": y.new_zeros(()), "reference": y.new_zeros(())}
    else:
        views: tuple[dict[str, Tensor], dict[str, Tensor]] = ({}, {})
        for node_type, p in (("target", config.mask_target), ("reference", config.mask_reference)):
            x = graph[node_type].x
            keep1, keep2 = complementary_masks(tuple(x.shape), p, generator)
            views[0][node_type] = x * keep1
            views[1][node_type] = x * keep2
        h_online = model.encode(views[0], edge_index_dict)
        h_teacher = teacher.encode(views[1], edge_index_dict)
        online = predictor(h_online) if predictor is not None else h_online
        contrastive = {key: contrastive_loss(online[key], h_teacher[key]) for key in ("target", "reference")}
    pred = model.decode(h_online, edge_index_dict)
    mse = F.mse_loss(pred, y)
    pcc_loss = 1 - _mean_pcc(pred, y)
    gene_specific_loss = 1 - gene_specific_pcc(pred, y) if config.w_gene_specific else y.new_zeros(())
    loss = (
        mse
        + config.w_pcc * pcc_loss
        + config.w_gene_specific * gene_specific_loss
        + config.w_target * contrastive["target"]
        + config.w_reference * contrastive["reference"]
    )
    return {
        "loss": loss,
        "mse": mse,
        "pcc_loss": pcc_loss,
        "gene_specific_loss": gene_specific_loss,
        "contrastive_target": contrastive["target"],
        "contrastive_reference": contrastive["reference"],
    }


def release_freed_memory() -> None:
    """Hand the C allocator's freed pages back to the system (glibc's `malloc_trim`; a no-op without it).

    Training steps on large tiles free gigabytes in blocks the allocator keeps for reuse, and a stored
    section's validation pass allocates larger blocks of its own, so the two would add up (measured at
    8 um: 0.9 GB held after four tile steps, returned by this call).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


@torch.inference_mode()
def _validate(model: SpaHGC, graphs: list[Graph], chunk_spots: int = 0) -> tuple[float, float]:
    """(mean MSE, mean per-section mean per-gene PCC) over unmasked validation graphs; NaN when there are none.

    Sections of more than `chunk_spots` spots (when > 0) are predicted in chunks: the same numbers."""
    if not graphs:
        return math.nan, math.nan
    if any(isinstance(graph, StoredSectionGraph) for graph in graphs):
        release_freed_memory()
    model.eval()
    mses, pccs = [], []
    for graph in graphs:
        if isinstance(graph, StoredSectionGraph):
            device = next(model.parameters()).device
            pred = predict_stored(model, graph, chunk_spots if chunk_spots > 0 else graph.num_spots, device)
            y = graph.labelled()["target"].y.to(device)
        else:
            if 0 < chunk_spots < graph["target"].num_nodes:
                pred = predict_in_chunks(model, graph.x_dict, graph.edge_index_dict, chunk_spots)
            else:
                pred = model(graph.x_dict, graph.edge_index_dict)
            y = graph["target"].y
        mse, pcc = _section_scores(pred, y)
        mses.append(mse)
        pccs.append(pcc)
    finite = [value for value in pccs if not math.isnan(value)]
    return float(np.mean(mses)), float(np.mean(finite)) if finite else math.nan


def _section_scores(pred: Tensor, y: Tensor, genes_per_block: int = 32) -> tuple[float, float]:
    """(MSE, mean per-gene PCC; NaN when no gene has one) of one section, a block of genes at a time: the
    centred copies and products are a block's, not the section's [N, G] (1.5 GB at 400,000 bins x 300 genes)."""
    squared_error, blocks = 0.0, []
    for start in range(0, y.shape[1], genes_per_block):
        predicted, measured = pred[:, start : start + genes_per_block], y[:, start : start + genes_per_block]
        squared_error += F.mse_loss(predicted, measured, reduction="sum").item()
        blocks.append(pcc_per_gene(predicted, measured))
    pcc = torch.cat(blocks)
    return squared_error / y.numel(), pcc.nanmean().item() if not pcc.isnan().all() else math.nan


def fit(
    train_graphs: list[Graph],
    validation_graphs: list[Graph],
    config: TrainConfig,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train SpaHGC on whole-section graphs and keep the epoch with the best validation PCC (1-based epochs).

    Without validation graphs (or when validation PCC is never defined) the last epoch is kept. With
    `refit_on_validation` the returned weights are those of a second run on training + validation
    graphs for the chosen number of epochs; history and best epoch stay the first run's.
    """
    if not train_graphs:
        raise ValueError("fit needs at least one training section graph")
    first = _inspected(train_graphs[0])
    target_dim, n_genes = first["target"].x.shape[1], first["target"].y.shape[1]
    for graph in train_graphs + validation_graphs:
        _check_graph(_inspected(graph), target_dim, n_genes, need_y=True)

    previous_threads = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        result = _fit(train_graphs, validation_graphs, config, on_epoch, progress, target_dim, n_genes)
        if config.refit_on_validation and validation_graphs:
            again = replace(config, epochs=result.best_epoch, patience=0, refit_on_validation=False)
            refit = _fit(train_graphs + validation_graphs, [], again, None, progress, target_dim, n_genes)
            result = replace(result, state_dict=refit.state_dict)
        return result
    finally:
        torch.set_num_threads(previous_threads)


def spatial_tiles(pos: Tensor, max_spots: int) -> list[Tensor]:
    """Spot indices in spatially compact tiles of at most `max_spots`: halved at the median of the longer
    side, recursively, so tiles are contiguous blocks of near-equal size (sorted indices, each spot once)."""
    pending, tiles = [torch.arange(pos.shape[0], device=pos.device)], []
    while pending:
        spots = pending.pop()
        if spots.numel() <= max_spots:
            tiles.append(spots.sort().values)
            continue
        xy = pos[spots]
        axis = int((xy.max(dim=0).values - xy.min(dim=0).values).argmax())
        order = torch.argsort(xy[:, axis], stable=True)
        half = spots.numel() // 2
        pending += [spots[order[half:]], spots[order[:half]]]
    return tiles


def tile_subgraph(graph: HeteroData, spots: Tensor) -> HeteroData:
    """The graph induced by target `spots` and the references they retrieved: every edge among them is kept
    (without the section's spot ids)."""
    refer = graph[REFERENCE_EDGES].edge_index
    in_tile = torch.zeros(graph["target"].num_nodes, dtype=torch.bool, device=refer.device)
    in_tile[spots] = True
    references = refer[0, in_tile[refer[1]]].unique()
    tile = graph.subgraph({"target": spots, "reference": references})
    if "spot_ids" in tile:
        # callers index a tile's spots by `spots`; the section's list of N ids made every tile's .to(device) walk
        # N strings in Python (an epoch quadratic in N)
        del tile.spot_ids
    return tile


def training_steps(graphs: list[Graph], max_spots: int) -> list[tuple[int, Tensor | None]]:
    """One optimiser step per (graph index, tile spots); whole graphs (tile None) up to `max_spots` spots.

    A graph left in the store is always tiled (by `max_spots`, else as one tile): it is never held whole."""
    steps: list[tuple[int, Tensor | None]] = []
    for index, graph in enumerate(graphs):
        stored = isinstance(graph, StoredSectionGraph)
        targets = graph.skeleton()["target"] if stored else graph["target"]
        n_spots = targets.num_nodes
        if not 0 < max_spots < n_spots:
            steps.append((index, torch.arange(n_spots) if stored else None))
            continue
        # without pixel positions, tiles follow the spot order
        pos = targets.pos if "pos" in targets else torch.arange(n_spots)[:, None].float()
        steps += [(index, tile) for tile in spatial_tiles(pos, max_spots)]
    return steps


def _on_device(graph: Graph, device: torch.device) -> Graph:
    """A graph on `device`: a copy (PyG's .to() moves in place); one left in the store moves tile by tile."""
    return graph if isinstance(graph, StoredSectionGraph) else copy.copy(graph).to(device)


def _step_graph(graph: Graph, tile: Tensor | None, device: torch.device) -> HeteroData:
    """What one optimiser step trains on: the whole graph, or the tile `tile` of it."""
    if isinstance(graph, StoredSectionGraph):
        return graph.subgraph(tile).to(device)
    return graph if tile is None else tile_subgraph(graph, tile)


def _optimiser_step(
    model: SpaHGC,
    graph: HeteroData,
    config: TrainConfig,
    teacher: Teacher | None,
    predictor: Predictor | None,
    mask_generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
) -> list[tuple[str, float]]:
    """One optimiser step on `graph`; its loss terms as numbers, so none of the step's tensors outlives it."""
    terms = _train_step(model, graph, config, teacher, predictor, mask_generator)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()
    if teacher is not None:
        teacher.update()
    return [(key, value.item()) for key, value in terms.items()]


def _fit(
    train_graphs: list[Graph],
    validation_graphs: list[Graph],
    config: TrainConfig,
    on_epoch: Callable[[int, dict], None] | None,
    progress: bool,
    target_dim: int,
    n_genes: int,
) -> FitResult:
    """The seeded training loop behind `fit`."""
    set_seed(config.seed)
    device = torch.device(config.device)
    model = SpaHGC.from_config(target_dim, n_genes, config.model).to(device)
    train_graphs = [_on_device(graph, device) for graph in train_graphs]
    validation_graphs = [_on_device(graph, device) for graph in validation_graphs]
    teacher = Teacher(model, config.teacher, config.ema_decay) if config.use_contrastive else None
    predictor = Predictor(config.model.hidden).to(device) if config.use_contrastive and config.use_predictor else None
    parameters = list(model.parameters()) + (list(predictor.parameters()) if predictor is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    order_generator = torch.Generator().manual_seed(config.seed)
    mask_generator = torch.Generator(device=device).manual_seed(config.seed + 1)

    steps = training_steps(train_graphs, config.max_full_graph_spots)
    if len(steps) > len(train_graphs):
        logger.info("Training on %d spatial tiles of at most %d spots.", len(steps), config.max_full_graph_spots)

    history: list[dict] = []
    best_epoch, best_pcc, best_state = 0, -math.inf, None
    epochs = progress_bar(range(1, config.epochs + 1), desc="epochs", disable=not progress)
    for epoch in epochs:
        model.train()
        if predictor is not None:
            predictor.train()
        sums = dict.fromkeys(
            ("loss", "mse", "pcc_loss", "gene_specific_loss", "contrastive_target", "contrastive_reference"), 0.0
        )
        for index in torch.randperm(len(steps), generator=order_generator).tolist():
            graph_index, tile = steps[index]
            # the tile is not bound here: a local would hold the last one (240 MB at 8 um) through validation
            terms = _optimiser_step(
                model,
                _step_graph(train_graphs[graph_index], tile, device),
                config,
                teacher,
                predictor,
                mask_generator,
                optimizer,
            )
            for key, value in terms:
                sums[key] += value
        val_loss, val_pcc = _validate(model, validation_graphs, config.max_full_graph_spots)
        row = {"epoch": epoch, **{f"train_{key}": value / len(steps) for key, value in sums.items()}}
        row.update(val_loss=val_loss, val_pcc=val_pcc)
        history.append(row)
        # ties keep the earlier epoch; until some validation PCC is defined, the latest epoch is kept
        score = -math.inf if math.isnan(val_pcc) else val_pcc
        if best_state is None or score > best_pcc or best_pcc == -math.inf:
            best_epoch, best_pcc = epoch, score
            best_state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
        epochs.set_postfix(train_loss=f"{row['train_loss']:.4f}", val_pcc=f"{val_pcc:.4f}", best=best_epoch)
        if on_epoch is not None:
            on_epoch(epoch, row)
        if config.patience and best_pcc > -math.inf and epoch - best_epoch >= config.patience:
            logger.info("Early stop at epoch %d: no better validation PCC since epoch %d.", epoch, best_epoch)
            break
    return FitResult(
        state_dict=best_state,
        target_dim=target_dim,
        n_genes=n_genes,
        model=config.model,
        history=history,
        best_epoch=best_epoch,
    )


def predict(
    model: SpaHGC, graph: HeteroData | StoredSectionGraph, device: str = "cpu", chunk_spots: int = 0
) -> np.ndarray:
    """Predicted normalised expression [N, G] from the unmasked graph, in eval mode.

    With `chunk_spots` > 0 and more target spots than that, layer by layer in chunks of spots
    (`predict_in_chunks`): the same numbers with memory set by the chunk, not the section. A graph
    left in the store is always predicted that way (`predict_stored`).
    """
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            if isinstance(graph, StoredSectionGraph):
                chunk = chunk_spots if chunk_spots > 0 else graph.num_spots
                return predict_stored(model, graph, chunk, torch.device(device)).float().cpu().numpy()
            graph = copy.copy(graph).to(device)
            if 0 < chunk_spots < graph["target"].num_nodes:
                predicted = predict_in_chunks(model, graph.x_dict, graph.edge_index_dict, chunk_spots)
            else:
                predicted = model(graph.x_dict, graph.edge_index_dict)
            return predicted.float().cpu().numpy()
    finally:
        model.train(was_training)


def _edges_into(edge_index_dict: dict[EdgeType, Tensor], target: Tensor, reference: Tensor) -> dict[EdgeType, Tensor]:
    """The edges whose receiving node is in the chunk: `target`/`reference` are boolean masks over the nodes.

    Reference edges carry messages both ways (CNDA), so they are kept when either end is in the chunk.
    """
    receiving = {
        SPATIAL_EDGES: lambda index: target[index[1]],
        REFERENCE_EDGES: lambda index: target[index[1]] | reference[index[0]],
        REFERENCE_NEIGHBOUR_EDGES: lambda index: reference[index[1]],
    }
    return {kind: index[:, receiving[kind](index)] for kind, index in edge_index_dict.items() if kind in receiving}


def predict_in_chunks(
    model: SpaHGC, x_dict: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor], chunk_spots: int
) -> Tensor:
    """The model's forward pass, one layer at a time over chunks of target spots, then of reference spots.

    A node's next state depends only on the current states and its incoming edges, so each chunk
    computes its own nodes' next states from them and the nodes sending into them: the per-edge attention and
    message tensors (the memory of a full-graph pass) and the work hold one chunk at a time, and
    a section's chunks together cost about one full pass, not one per chunk.
    """
    return _layers_in_chunks(model, *model.project_inputs(x_dict), edge_index_dict, chunk_spots)


def predict_stored(model: SpaHGC, graph: StoredSectionGraph, chunk_spots: int, device: torch.device) -> Tensor:
    """`predict_in_chunks` of a graph left in the store: inputs projected block by block as they are read, so
    neither its features nor a full pass's per-edge tensors are ever held whole."""
    rows = (graph.num_spots, graph.skeleton()["reference"].num_nodes, graph.skeleton()["reference"].num_nodes)
    states: list[Tensor] = []
    # written into states allocated once: a list of blocks joined at the end would hold every state twice
    for block, inputs in enumerate(graph.input_blocks(chunk_spots)):
        projected = model.project_inputs({kind: x.to(device) for kind, x in inputs.items()})
        states = states or [part.new_empty((n, part.shape[1])) for part, n in zip(projected, rows, strict=True)]
        for state, part in zip(states, projected, strict=True):
            state[block * chunk_spots : block * chunk_spots + part.shape[0]] = part
    edges = {kind: index.to(device) for kind, index in graph.skeleton().edge_index_dict.items()}
    return _layers_in_chunks(model, *states, edges, chunk_spots)


def _layers_in_chunks(
    model: SpaHGC,
    target: Tensor,
    reference: Tensor,
    reference_y: Tensor,
    edge_index_dict: dict[EdgeType, Tensor],
    chunk_spots: int,
) -> Tensor:
    """The encoder layers and the decoder over chunks of nodes, from the projected inputs."""
    n_chunks, device = -(-target.shape[0] // chunk_spots), target.device
    no_targets = torch.zeros(target.shape[0], dtype=torch.bool, device=device)
    no_references = torch.zeros(reference.shape[0], dtype=torch.bool, device=device)
    # a chunk's targets and its references are separate calls: in one, the chunk would also take in every
    # target that retrieved one of its references (at 8 um seven times its own targets) and run the layer on them
    target_chunks = [
        _Chunk.of(edge_index_dict, _chunk_mask(target.shape[0], n_chunks, chunk, device), no_references)
        for chunk in range(n_chunks)
    ]
    reference_chunks = [
        chunk
        for chunk in (
            _Chunk.of(edge_index_dict, no_targets, _chunk_mask(reference.shape[0], n_chunks, index, device))
            for index in range(n_chunks)
        )
        if chunk.own_references.numel()
    ]
    for layer in model.layers:
        next_target, next_reference = torch.empty_like(target), torch.empty_like(reference)
        # each chunk computes only its receivers' states: the other type's nodes are senders here
        for chunk in target_chunks:
            with_expression = layer.cross_attention.with_expression(
                reference[chunk.references], reference_y[chunk.references]
            )
            out_target = layer.to_target(target[chunk.targets], with_expression, chunk.edges)
            next_target[chunk.own_targets] = out_target[chunk.own_target_rows]
        for chunk in reference_chunks:
            references = reference[chunk.references]
            with_expression = layer.cross_attention.with_expression(references, reference_y[chunk.references])
            out_reference = layer.to_reference(target[chunk.targets], references, with_expression, chunk.edges)
            next_reference[chunk.own_references] = out_reference[chunk.own_reference_rows]
        # in place: the layer's input states are freed here, so a section's states are held twice, not three times
        target, reference = F.leaky_relu_(next_target, 0.2), F.leaky_relu_(next_reference, 0.2)
    out = torch.empty(target.shape[0], model.n_genes, dtype=target.dtype, device=target.device)
    for chunk in target_chunks:
        states = {"target": target[chunk.targets], "reference": reference[chunk.references]}
        out[chunk.own_targets] = model.decode(states, chunk.edges)[chunk.own_target_rows]
    return out


@dataclass(frozen=True)
class _Chunk:
    """One chunk's nodes (its own and those sending into them, by global index) and its edges renumbered to them."""

    targets: Tensor
    references: Tensor
    edges: dict[EdgeType, Tensor]
    own_targets: Tensor
    own_references: Tensor
    own_target_rows: Tensor
    own_reference_rows: Tensor

    @classmethod
    def of(cls, edge_index_dict: dict[EdgeType, Tensor], in_target: Tensor, in_reference: Tensor) -> _Chunk:
        """The chunk of the nodes in `in_target` / `in_reference` (boolean masks)."""
        edges_in = _edges_into(edge_index_dict, in_target, in_reference)
        own_targets, own_references = in_target.nonzero().flatten(), in_reference.nonzero().flatten()
        ends = {"target": [own_targets], "reference": [own_references]}
        for (source, _, destination), index in edges_in.items():
            ends[source].append(index[0])
            ends[destination].append(index[1])
        targets, references = torch.cat(ends["target"]).unique(), torch.cat(ends["reference"]).unique()
        local = {"target": targets, "reference": references}
        edges = {
            kind: torch.stack(
                [torch.searchsorted(local[kind[0]], index[0]), torch.searchsorted(local[kind[2]], index[1])]
            )
            for kind, index in edges_in.items()
        }
        return cls(
            targets=targets,
            references=references,
            edges=edges,
            own_targets=own_targets,
            own_references=own_references,
            own_target_rows=torch.searchsorted(targets, own_targets),
            own_reference_rows=torch.searchsorted(references, own_references),
        )


def _chunk_mask(n: int, n_chunks: int, chunk: int, device: torch.device) -> Tensor:
    """Nodes of chunk `chunk` of `n_chunks` contiguous, near-equal chunks of `n` nodes."""
    bounds = torch.linspace(0, n, n_chunks + 1).round().long()
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    mask[bounds[chunk] : bounds[chunk + 1]] = True
    return mask
