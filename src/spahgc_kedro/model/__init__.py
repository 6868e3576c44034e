"""SpaHGC in plain torch/PyG: the network, masked contrastive learning, training and prediction."""

from .contrastive import Teacher, complementary_masks, contrastive_loss
from .spahgc import ModelConfig, SpaHGC
from .training import FitResult, TrainConfig, fit, load_model, pcc_per_gene, predict, set_seed

__all__ = [
    "SpaHGC",
    "ModelConfig",
    "Teacher",
    "complementary_masks",
    "contrastive_loss",
    "TrainConfig",
    "FitResult",
    "set_seed",
    "load_model",
    "pcc_per_gene",
    "fit",
    "predict",
]
