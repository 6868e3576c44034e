"""Masked graph contrastive learning: complementary feature masks, the teacher encoder, the BYOL-style loss."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .spahgc import EdgeType, SpaHGC

TEACHER_MODES = ("ema", "frozen", "shared")


def complementary_masks(shape: tuple[int, ...], p: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Boolean keep-masks: view 1 zeroes a random fraction `p` of entries, view 2 exactly the others."""
    keep_view1 = torch.rand(shape, generator=generator, device=generator.device) >= p
    return keep_view1, ~keep_view1


def contrastive_loss(online: Tensor, teacher: Tensor) -> Tensor:
    """2 - 2 * mean cosine similarity between matching rows (no negatives); the teacher side gets no gradient."""
    online = F.normalize(online, dim=-1)
    teacher = F.normalize(teacher.detach(), dim=-1)
    return 2 - 2 * (online * teacher).sum(dim=-1).mean()


class Predictor(nn.Module):
    """BGRL's online-side predictor: a small MLP per node type, so an EMA/shared teacher cannot be trivially matched."""

    def __init__(self, hidden: int, node_types: tuple[str, ...] = ("target", "reference")) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(
            {
                node_type: nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden))
                for node_type in node_types
            }
        )

    def forward(self, h_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Predicted teacher states per node type."""
        return {node_type: head(h_dict[node_type]) for node_type, head in self.heads.items()}


class Teacher:
    """The encoder that embeds view 2 without gradient.

    Modes: 'ema' (default; BGRL: a copy updated as an exponential moving average of the online
    weights with `decay`), 'frozen' (a copy at initialisation, never updated: the reference code),
    'shared' (the online model itself under stop-grad: the paper's figure).
    """

    def __init__(self, online: SpaHGC, mode: str = "ema", decay: float = 0.99) -> None:
        if mode not in TEACHER_MODES:
            raise ValueError(f"teacher mode {mode!r} is not one of {TEACHER_MODES}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay must lie in [0, 1], got {decay}")
        self.mode = mode
        self.decay = decay
        self.online = online
        self.model = online if mode == "shared" else copy.deepcopy(online)
        if mode != "shared":
            self.model.requires_grad_(False)

    @torch.no_grad()
    def encode(self, x_dict: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor]) -> dict[str, Tensor]:
        """Teacher node states for a view; dropout follows the online model's train/eval mode."""
        if self.model is not self.online:
            self.model.train(self.online.training)
        return self.model.encode(x_dict, edge_index_dict)

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step toward the online weights ('ema' only; the other modes need none)."""
        if self.mode != "ema":
            return
        online_state = self.online.state_dict()
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                value.lerp_(online_state[name], 1.0 - self.decay)
            else:
                value.copy_(online_state[name])
