"""The SpaHGC network: input projections, heterogeneous CNDA/SAGE encoder layers, CNAP decoder.

PyG's hetero interface: `forward(x_dict, edge_index_dict)` with node types `target` and
`reference` and the edge types below (a missing edge type is an empty edge set).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv
from torch_geometric.utils import scatter, softmax

SPATIAL_EDGES = ("target", "near", "target")
REFERENCE_EDGES = ("reference", "refer", "target")
REFERENCE_NEIGHBOUR_EDGES = ("reference", "close", "reference")


EdgeType = tuple[str, str, str]
DECODERS = ("linear", "factorised")


def edges(edge_index_dict: dict[EdgeType, Tensor], edge_type: EdgeType, device: torch.device) -> Tensor:
    """The edge index of `edge_type`, or an empty one when the section has none."""
    if edge_type in edge_index_dict:
        return edge_index_dict[edge_type]
    return torch.empty(2, 0, dtype=torch.long, device=device)


@dataclass
class ModelConfig:
    """The architecture: SpaHGC's constructor arguments besides the data's dimensions (method.md step 6)."""

    hidden: int = 256
    n_layers: int = 4
    heads: int = 4
    dropout: float = 0.2
    attention_dropout: float = 0.1
    use_spatial_edges: bool = True
    use_reference_edges: bool = True
    # linear: Linear(hidden -> G), the paper's; factorised: a per-spot depth head mapped to every gene by
    # a learnt line, plus a spot-centred composition head (docs/metrics.md)
    decoder: str = "linear"


def edge_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    query_index: Tensor,
    key_index: Tensor,
    heads: int,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Multi-head attention of each query node over its incoming edges: LeakyReLU'd scaled dot product, edge softmax."""
    n_query, hidden = query.shape
    head_dim = hidden // heads
    # index_select: its backward is a plain index_add, cheaper than advanced indexing's deterministic path
    q = query.index_select(0, query_index).view(-1, heads, head_dim)
    k = key.index_select(0, key_index).view(-1, heads, head_dim)
    v = value.index_select(0, key_index).view(-1, heads, head_dim)
    score = F.leaky_relu((q * k).sum(dim=-1) / head_dim**0.5, negative_slope=0.2)
    weight = softmax(score, query_index, num_nodes=n_query)
    weight = F.dropout(weight, p=dropout, training=training)
    messages = (weight.unsqueeze(-1) * v).view(-1, hidden)
    return scatter(messages, query_index, dim=0, dim_size=n_query, reduce="sum")


class CrossNodeDualAttention(nn.Module):
    """CNDA: reference -> target and target -> reference attention over the refer edges, expression-aware."""

    def __init__(self, hidden: int, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.expression_norm = nn.LayerNorm(hidden)
        # reference -> target: query from the target, key/value from [reference || expression]
        self.target_query = nn.Linear(hidden, hidden)
        self.reference_key_value = nn.Linear(2 * hidden, 2 * hidden)
        self.target_out = nn.Linear(hidden, hidden)
        # target -> reference: the reverse
        self.reference_query = nn.Linear(2 * hidden, hidden)
        self.target_key_value = nn.Linear(hidden, 2 * hidden)
        self.reference_out = nn.Linear(hidden, hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal projections (std 0.02) and zero biases, as in the reference code."""
        self.expression_norm.reset_parameters()
        for layer in (
            self.target_query,
            self.reference_key_value,
            self.target_out,
            self.reference_query,
            self.target_key_value,
            self.reference_out,
        ):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(
        self, target: Tensor, reference: Tensor, reference_y: Tensor, refer_edges: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Messages for (target, reference) nodes from the other node type."""
        reference_with_expression = self.with_expression(reference, reference_y)
        return (
            self.to_target(target, reference_with_expression, refer_edges),
            self.to_reference(target, reference_with_expression, refer_edges),
        )

    def with_expression(self, reference: Tensor, reference_y: Tensor) -> Tensor:
        """Reference states followed by their normalised expression projection ([M, 2 hidden])."""
        return torch.cat([reference, self.expression_norm(reference_y)], dim=-1)

    def to_target(self, target: Tensor, reference_with_expression: Tensor, refer_edges: Tensor) -> Tensor:
        """Reference -> target messages: each target attends over the references it retrieved."""
        source, destination = refer_edges
        key, value = self.reference_key_value(reference_with_expression).chunk(2, dim=-1)
        to_target = edge_attention(
            self.target_query(target), key, value, destination, source, self.heads, self.dropout, self.training
        )
        return self.target_out(to_target)

    def to_reference(self, target: Tensor, reference_with_expression: Tensor, refer_edges: Tensor) -> Tensor:
        """Target -> reference messages: each reference attends over the targets that retrieved it."""
        source, destination = refer_edges
        key, value = self.target_key_value(target).chunk(2, dim=-1)
        to_reference = edge_attention(
            self.reference_query(reference_with_expression),
            key,
            value,
            source,
            destination,
            self.heads,
            self.dropout,
            self.training,
        )
        return self.reference_out(to_reference)


class HeterogeneousLayer(nn.Module):
    """One encoder layer: SAGE on spatial and reference-neighbour edges, CNDA across; relation outputs averaged."""

    def __init__(
        self,
        hidden: int,
        heads: int = 4,
        attention_dropout: float = 0.1,
        use_spatial_edges: bool = True,
        use_reference_edges: bool = True,
    ) -> None:
        super().__init__()
        self.cross_attention = CrossNodeDualAttention(hidden, heads, attention_dropout)
        self.spatial = SAGEConv(hidden, hidden) if use_spatial_edges else None
        self.reference_neighbours = SAGEConv(hidden, hidden) if use_reference_edges else None

    def forward(
        self, target: Tensor, reference: Tensor, reference_y: Tensor, edge_index_dict: dict[EdgeType, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """New (target, reference) states: mean over the relations arriving at each node type."""
        reference_with_expression = self.cross_attention.with_expression(reference, reference_y)
        return (
            self.to_target(target, reference_with_expression, edge_index_dict),
            self.to_reference(target, reference, reference_with_expression, edge_index_dict),
        )

    def to_target(
        self, target: Tensor, reference_with_expression: Tensor, edge_index_dict: dict[EdgeType, Tensor]
    ) -> Tensor:
        """New target states: the mean of the messages from their references and from their spatial neighbours."""
        messages = [
            self.cross_attention.to_target(
                target, reference_with_expression, edges(edge_index_dict, REFERENCE_EDGES, target.device)
            )
        ]
        if self.spatial is not None:
            messages.append(self.spatial(target, edges(edge_index_dict, SPATIAL_EDGES, target.device)))
        return torch.stack(messages).mean(dim=0)

    def to_reference(
        self,
        target: Tensor,
        reference: Tensor,
        reference_with_expression: Tensor,
        edge_index_dict: dict[EdgeType, Tensor],
    ) -> Tensor:
        """New reference states: the mean of the messages from the targets that retrieved them and from their close
        references."""
        messages = [
            self.cross_attention.to_reference(
                target, reference_with_expression, edges(edge_index_dict, REFERENCE_EDGES, target.device)
            )
        ]
        if self.reference_neighbours is not None:
            messages.append(
                self.reference_neighbours(
                    reference, edges(edge_index_dict, REFERENCE_NEIGHBOUR_EDGES, reference.device)
                )
            )
        return torch.stack(messages).mean(dim=0)


class CrossNodeAttentionPooling(nn.Module):
    """CNAP: each target spot attends over its retrieved references; added to a projection of its own state."""

    def __init__(self, hidden: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.residual = nn.Linear(hidden, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.key_value = nn.Linear(hidden, 2 * hidden)

    def forward(self, target: Tensor, reference: Tensor, refer_edges: Tensor) -> Tensor:
        """Pooled target states [N, hidden]."""
        residual = self.residual(target)
        key, value = self.key_value(reference).chunk(2, dim=-1)
        source, destination = refer_edges
        pooled = edge_attention(self.query(residual), key, value, destination, source, self.heads)
        return residual + pooled


class SpaHGC(nn.Module):
    """Heterogeneous graph encoder over target and reference spots with a CNAP expression decoder."""

    def __init__(
        self,
        target_dim: int,
        n_genes: int,
        hidden: int = 256,
        n_layers: int = 4,
        heads: int = 4,
        dropout: float = 0.2,
        attention_dropout: float = 0.1,
        use_spatial_edges: bool = True,
        use_reference_edges: bool = True,
        decoder: str = "linear",
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"Unknown train.model.decoder '{decoder}'. Choose one of: {', '.join(DECODERS)}.")
        self.decoder = decoder
        self.n_genes = n_genes
        # bias-free input projections, as in the reference code
        self.target_in = nn.Linear(target_dim, hidden, bias=False)
        self.reference_in = nn.Linear(target_dim + n_genes, hidden, bias=False)
        self.reference_y_in = nn.Linear(n_genes, hidden, bias=False)
        self.shared_in = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden, bias=False),
            nn.LayerNorm(hidden),
            nn.LeakyReLU(0.2),
        )
        self.layers = nn.ModuleList(
            HeterogeneousLayer(hidden, heads, attention_dropout, use_spatial_edges, use_reference_edges)
            for _ in range(n_layers)
        )
        self.pool = CrossNodeAttentionPooling(hidden, heads)
        self.out = nn.Linear(hidden, n_genes)
        if decoder == "factorised":
            self.depth_out = nn.Linear(hidden, 1)
            self.gene_offset = nn.Parameter(torch.zeros(n_genes))
            self.gene_slope = nn.Parameter(torch.ones(n_genes))

    @classmethod
    def from_config(cls, target_dim: int, n_genes: int, config: ModelConfig) -> SpaHGC:
        """A model for `target_dim`-d embeddings and `n_genes` genes with the configured architecture."""
        return cls(target_dim, n_genes, **asdict(config))

    def project_inputs(self, x_dict: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Initial (target, reference) states and the references' expression projection."""
        x_target, x_reference = x_dict["target"], x_dict["reference"]
        # the expression part keeps its own projection, fed unchanged to every CNDA layer
        reference_y = self.reference_y_in(x_reference[:, -self.n_genes :])
        return self.shared_in(self.target_in(x_target)), self.shared_in(self.reference_in(x_reference)), reference_y

    def encode(self, x_dict: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor]) -> dict[str, Tensor]:
        """Node states {'target': [N, h], 'reference': [M, h]} (masked views are just other x_dicts)."""
        target, reference, reference_y = self.project_inputs(x_dict)
        for layer in self.layers:
            target, reference = layer(target, reference, reference_y, edge_index_dict)
            # the reference code applies the activation after every layer, the last included
            target, reference = F.leaky_relu(target, 0.2), F.leaky_relu(reference, 0.2)
        return {"target": target, "reference": reference}

    def decode(self, h_dict: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor]) -> Tensor:
        """Predicted expression [N, G] from node states (CNAP, then a linear read-out, no activation)."""
        target = h_dict["target"]
        pooled = self.pool(target, h_dict["reference"], edges(edge_index_dict, REFERENCE_EDGES, target.device))
        if self.decoder == "factorised":
            composition = self.out(pooled)
            composition = composition - composition.mean(dim=1, keepdim=True)
            return self.gene_offset + self.gene_slope * self.depth_out(pooled) + composition
        return self.out(pooled)

    def forward(self, x_dict: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor]) -> Tensor:
        """Predicted expression [N, G] for the graph's target spots."""
        return self.decode(self.encode(x_dict, edge_index_dict), edge_index_dict)
