"""SpaHGC's forward pass against a hand-written NumPy reading of method.md steps 6-7.

The reference below takes only the model's weights; every operation (bias or none, LeakyReLU slope 0.2,
LayerNorm, the per-node edge softmax of each head, SAGE's mean, the relation average, CNAP's residual, the
read-out) is written out from the method description, with loops over nodes and heads instead of PyG's
scatter and softmax.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spahgc_kedro.model import ModelConfig, SpaHGC
from spahgc_kedro.model.spahgc import (
    REFERENCE_EDGES,
    REFERENCE_NEIGHBOUR_EDGES,
    SPATIAL_EDGES,
    CrossNodeAttentionPooling,
    CrossNodeDualAttention,
    HeterogeneousLayer,
)

N_TARGET, N_REFERENCE, D, G, HIDDEN, HEADS = 7, 6, 5, 3, 8, 2


def linear(x: np.ndarray, layer: torch.nn.Linear, bias: bool = True) -> np.ndarray:
    """x W^T (+ b): the bias is added only where the method has one (a bias the method lacks is ignored)."""
    out = x @ layer.weight.detach().numpy().T
    return out + layer.bias.detach().numpy() if bias else out


def leaky(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, 0.2 * x)


def layer_norm(x: np.ndarray, norm: torch.nn.LayerNorm) -> np.ndarray:
    centred = x - x.mean(axis=1, keepdims=True)
    scaled = centred / np.sqrt((centred**2).mean(axis=1, keepdims=True) + 1e-5)
    return scaled * norm.weight.detach().numpy() + norm.bias.detach().numpy()


def attention(query, key, value, query_index, key_index, heads):
    """Each query node: per head, softmax over its incoming edges of LeakyReLU(q.k / sqrt(d)), sum of values."""
    out = np.zeros_like(query)
    width = query.shape[1] // heads
    for node in range(len(query)):
        incoming = key_index[query_index == node]
        if len(incoming) == 0:
            continue
        for head in range(heads):
            part = slice(head * width, (head + 1) * width)
            score = leaky(np.array([query[node, part] @ key[j, part] for j in incoming]) / math.sqrt(width))
            weight = np.exp(score - score.max())
            weight /= weight.sum()
            out[node, part] = sum(w * value[j, part] for w, j in zip(weight, incoming, strict=True))
    return out


def sage(x, edge_index, conv):
    """Mean of the source states arriving at each node (zero without any), lin_l of that plus lin_r of its own."""
    source, destination = edge_index
    mean = np.zeros_like(x)
    for node in range(len(x)):
        arriving = source[destination == node]
        if len(arriving):
            mean[node] = x[arriving].mean(axis=0)
    return linear(mean, conv.lin_l) + linear(x, conv.lin_r, bias=False)


def reference_forward(model: SpaHGC, x_dict, edge_index_dict, spatial: bool, neighbours: bool, factorised: bool):
    """Method.md steps 6-7, from the model's weights alone."""
    x_target, x_reference = (x_dict[k].numpy() for k in ("target", "reference"))
    refer = edge_index_dict[REFERENCE_EDGES].numpy()
    reference_y = linear(x_reference[:, -G:], model.reference_y_in, bias=False)

    def shared(z):
        return leaky(layer_norm(linear(leaky(z), model.shared_in[2], bias=False), model.shared_in[3]))

    target = shared(linear(x_target, model.target_in, bias=False))
    reference = shared(linear(x_reference, model.reference_in, bias=False))
    for layer in model.layers:
        cnda = layer.cross_attention
        with_expression = np.concatenate([reference, layer_norm(reference_y, cnda.expression_norm)], axis=1)
        key_value = linear(with_expression, cnda.reference_key_value)
        to_target = attention(
            linear(target, cnda.target_query), key_value[:, :HIDDEN], key_value[:, HIDDEN:], refer[1], refer[0], HEADS
        )
        key_value = linear(target, cnda.target_key_value)
        to_reference = attention(
            linear(with_expression, cnda.reference_query),
            key_value[:, :HIDDEN],
            key_value[:, HIDDEN:],
            refer[0],
            refer[1],
            HEADS,
        )
        target_messages = [linear(to_target, cnda.target_out)]
        reference_messages = [linear(to_reference, cnda.reference_out)]
        if spatial:
            target_messages.append(sage(target, edge_index_dict[SPATIAL_EDGES].numpy(), layer.spatial))
        if neighbours:
            reference_messages.append(
                sage(reference, edge_index_dict[REFERENCE_NEIGHBOUR_EDGES].numpy(), layer.reference_neighbours)
            )
        target, reference = leaky(np.mean(target_messages, axis=0)), leaky(np.mean(reference_messages, axis=0))
    residual = linear(target, model.pool.residual)
    key_value = linear(reference, model.pool.key_value)
    pooled = residual + attention(
        linear(residual, model.pool.query), key_value[:, :HIDDEN], key_value[:, HIDDEN:], refer[1], refer[0], HEADS
    )
    if not factorised:
        return linear(pooled, model.out)
    composition = linear(pooled, model.out)
    composition -= composition.mean(axis=1, keepdims=True)
    depth = linear(pooled, model.depth_out)
    return model.gene_offset.detach().numpy() + model.gene_slope.detach().numpy() * depth + composition


def small_graph():
    """7 target and 6 reference spots: target 6 has no spatial neighbour, reference 5 is retrieved by none and
    reference 3 is no reference's neighbour, so empty neighbourhoods are covered."""
    rng = np.random.default_rng(0)
    x_dict = {
        "target": torch.from_numpy(rng.normal(size=(N_TARGET, D))),
        "reference": torch.from_numpy(rng.normal(size=(N_REFERENCE, D + G))),
    }
    spatial = [(s, d) for d in range(N_TARGET - 1) for s in rng.choice(N_TARGET - 1, 2, replace=False) if s != d]
    refer = [(s, d) for d in range(N_TARGET) for s in rng.choice(N_REFERENCE - 1, 3, replace=False)]
    close = [(s, d) for d in (0, 1, 2, 4, 5) for s in rng.choice([n for n in range(N_REFERENCE) if n != d], 2)]
    edge_index_dict = {
        edge_type: torch.tensor(pairs, dtype=torch.long).T
        for edge_type, pairs in ((SPATIAL_EDGES, spatial), (REFERENCE_EDGES, refer), (REFERENCE_NEIGHBOUR_EDGES, close))
    }
    return x_dict, edge_index_dict


def randomised(model: SpaHGC) -> SpaHGC:
    """Every parameter drawn at random (zero-initialised biases and gene offsets would hide their terms)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return model


@pytest.mark.parametrize(
    "spatial, neighbours, decoder",
    [(True, True, "linear"), (False, True, "linear"), (True, False, "factorised")],
)
def test_the_forward_pass_is_the_method_description(spatial, neighbours, decoder):
    torch.manual_seed(0)
    config = ModelConfig(
        hidden=HIDDEN,
        n_layers=2,
        heads=HEADS,
        use_spatial_edges=spatial,
        use_reference_edges=neighbours,
        decoder=decoder,
    )
    model = randomised(SpaHGC.from_config(D, G, config).double()).eval()
    x_dict, edge_index_dict = small_graph()
    with torch.no_grad():
        predicted = model(x_dict, edge_index_dict).numpy()
    expected = reference_forward(model, x_dict, edge_index_dict, spatial, neighbours, decoder == "factorised")
    assert predicted.shape == (N_TARGET, G)
    np.testing.assert_allclose(predicted, expected, rtol=1e-9, atol=1e-12)


def test_dropout_rates_are_the_configured_ones_and_act_only_in_training():
    """The configured dropout before the shared projection and attention dropout on the CNDA edge weights, acting
    only in training."""
    model = SpaHGC(D, G, hidden=HIDDEN, n_layers=2, heads=HEADS, dropout=0.3, attention_dropout=0.15)
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.3]
    assert [layer.cross_attention.dropout for layer in model.layers] == [0.15, 0.15]
    x_dict, edge_index_dict = small_graph()
    x_dict = {k: v.float() for k, v in x_dict.items()}
    for attention_dropout, differs in ((0.5, True), (0.0, False)):
        torch.manual_seed(0)
        model = SpaHGC(D, G, hidden=HIDDEN, n_layers=2, heads=HEADS, dropout=0.0, attention_dropout=attention_dropout)
        randomised(model)
        with torch.no_grad():
            evaluated = model.eval()(x_dict, edge_index_dict)
            trained = model.train()(x_dict, edge_index_dict)
        assert (not torch.allclose(trained, evaluated)) is differs
    # in both directions of the cross attention
    cnda = CrossNodeDualAttention(HIDDEN, HEADS, 0.5)
    states = [torch.randn(n, HIDDEN) for n in (N_TARGET, N_REFERENCE, N_REFERENCE)]
    refer = edge_index_dict[REFERENCE_EDGES]
    with torch.no_grad():
        for evaluated, trained in zip(cnda.eval()(*states, refer), cnda.train()(*states, refer), strict=True):
            assert not torch.allclose(trained, evaluated)


def test_cnda_starts_from_truncated_normal_weights_and_zero_biases():
    cnda = CrossNodeDualAttention(256, 4, 0.1)
    projections = [
        cnda.target_query,
        cnda.reference_key_value,
        cnda.target_out,
        cnda.reference_query,
        cnda.target_key_value,
        cnda.reference_out,
    ]
    for layer in projections:
        assert torch.count_nonzero(layer.bias) == 0
        assert 0.018 < layer.weight.std().item() < 0.022
    assert torch.equal(cnda.expression_norm.weight, torch.ones(256))


def test_constructor_defaults_are_the_methods():
    """Hidden 256, 4 layers of 4 heads, dropout 0.2, attention dropout 0.1, both edge kinds, linear read-out: what
    a model built without arguments has, and ModelConfig's defaults."""
    model = SpaHGC(D, G)
    built = {
        "hidden": model.target_in.out_features,
        "n_layers": len(model.layers),
        "heads": model.pool.heads,
        "dropout": model.shared_in[1].p,
        "attention_dropout": model.layers[0].cross_attention.dropout,
        "use_spatial_edges": model.layers[0].spatial is not None,
        "use_reference_edges": model.layers[0].reference_neighbours is not None,
        "decoder": model.decoder,
    }
    assert (
        built
        == vars(ModelConfig())
        == {
            "hidden": 256,
            "n_layers": 4,
            "heads": 4,
            "dropout": 0.2,
            "attention_dropout": 0.1,
            "use_spatial_edges": True,
            "use_reference_edges": True,
            "decoder": "linear",
        }
    )
    assert {layer.cross_attention.heads for layer in model.layers} == {4}
    layer = HeterogeneousLayer(HIDDEN)
    assert (layer.cross_attention.heads, layer.cross_attention.dropout) == (4, 0.1)
    assert layer.spatial is not None and layer.reference_neighbours is not None
    assert (CrossNodeDualAttention(HIDDEN).heads, CrossNodeDualAttention(HIDDEN).dropout) == (4, 0.1)
    assert CrossNodeAttentionPooling(HIDDEN).heads == 4


def test_an_unknown_decoder_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"^Unknown train.model.decoder 'mlp'. Choose one of: linear, factorised.$"):
        SpaHGC(D, G, decoder="mlp")


def test_a_width_the_heads_do_not_divide_is_refused_with_both_numbers():
    with pytest.raises(ValueError, match=r"^hidden \(10\) must be divisible by heads \(4\)$"):
        CrossNodeDualAttention(10, 4)
