"""Tiny random section graphs for the model tests, in the graph pipeline's HeteroData contract."""

from __future__ import annotations

import torch
from torch_geometric.data import HeteroData

from spahgc_kedro.model import ModelConfig, TrainConfig

D, G, K, HIDDEN = 12, 6, 3, 16


def make_graph(n: int = 24, m: int = 30, seed: int = 0, spatial: bool = True) -> HeteroData:
    """A random section graph whose targets depend on the target features and the retrieved expression."""
    g = torch.Generator().manual_seed(seed)
    data = HeteroData()
    x = torch.randn(n, D, generator=g)
    reference_expression = torch.rand(m, G, generator=g)
    data["reference"].x = torch.cat([torch.randn(m, D, generator=g), reference_expression], dim=1)
    references = torch.randint(0, m, (n, K), generator=g)
    data["reference", "refer", "target"].edge_index = torch.stack(
        [references.reshape(-1), torch.arange(n).repeat_interleave(K)]
    )
    mixing = torch.randn(D, G, generator=torch.Generator().manual_seed(123))
    data["target"].x = x
    data["target"].y = torch.sigmoid(x @ mixing) * 0.5 + 0.5 * reference_expression[references].mean(dim=1)
    if spatial:
        data["target", "near", "target"].edge_index = torch.stack([torch.arange(n), torch.arange(n).roll(1)]).repeat(
            1, 2
        )
    else:
        data["target", "near", "target"].edge_index = torch.empty(2, 0, dtype=torch.long)
    data["reference", "close", "reference"].edge_index = torch.stack(
        [torch.randint(0, m, (m * 2,), generator=g), torch.arange(m).repeat_interleave(2)]
    )
    data.section_id = f"s{seed}"
    return data


def tiny_config(**settings) -> TrainConfig:
    """A two-epoch training config with a one-layer, 16-wide model: fast enough for every fit in the model tests."""
    return TrainConfig(**{"epochs": 2, "lr": 1e-2, "model": ModelConfig(hidden=16, n_layers=1, heads=2), **settings})


def same_weights(a: dict, b: dict) -> bool:
    """Two state dicts hold the same tensors under the same names."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
