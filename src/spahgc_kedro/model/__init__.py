"""SpaHGC in plain torch/PyG: the network, masked contrastive learning, training and prediction."""

from .contrastive import Teacher, complementary_masks, contrastive_loss
from .spahgc import SpaHGC
from .training import FitResult, TrainConfig, build_model, fit, pcc_per_gene, predict, set_seed

__all__ = [
    "SpaHGC",
    "Teacher",
    "complementary_masks",
    "contrastive_loss",
    "TrainConfig",
    "FitResult",
    "set_seed",
    "build_model",
    "pcc_per_gene",
    "fit",
    "predict",
]
