"""A tiny deterministic stand-in encoder, so tests of the embedding code need no CNN time."""

from __future__ import annotations

from spahgc_kedro import encoders


class PatchStatistics:
    """A tiny deterministic stand-in encoder: colour means/spreads and edge strength per patch."""

    def __call__(self, images):
        import torch

        grey = images.mean(dim=1)
        edges = (grey[:, 1:, :] - grey[:, :-1, :]).abs().mean(dim=(1, 2))
        dark = (grey < grey.mean()).float().mean(dim=(1, 2))
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3)), edges[:, None], dark[:, None]], dim=1)

    def to(self, *args, **kwargs):
        return self


def patch_statistics_encoder(name: str, input_px: int) -> encoders.Encoder:
    """An Encoder whose model is `PatchStatistics` (8-d), at `input_px`."""
    spec = encoders.EncoderSpec(
        name=name, architecture="patch-statistics", input_px=input_px, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), dim=8
    )
    identity = encoders.weights_identity(name, None)
    return encoders.Encoder(spec=spec, model=PatchStatistics(), weights_source="test", weights_identity=identity)
