"""The MNIST CNNs: shapes, parameter counts (vs PyTorch), the same function as the thesis's
PyTorch model, and the convolution implementations against ``lax.conv_general_dilated``."""

import jax
import numpy as np
import pytest
from conftest import assert_close_scaled

from nnjax.models.cnn import StrongCNN, ThesisCNN, build_model, init_variables
from nnjax.nn import conv as conv_lib
from nnjax.train.freeze import count_params
from nnjax.train.init import run_once

THESIS_PARAMS = 320 + 64 + 9248 + 64 + 289 + 2 + 7850  # conv1, bn1, conv2, bn2, conv3, bn3, dense


def torch_thesis_model():
    """The thesis's appendix G.4 layers, in PyTorch."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    return torch.nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 1, 3, padding=1), nn.BatchNorm2d(1), nn.ReLU(),
        nn.Flatten(), nn.Linear(28 * 28, 10),
    )


def test_thesis_cnn_parameter_count_matches_pytorch(capsys):
    # the shapes of init_variables' tree, traced without compiling or running it
    variables = jax.eval_shape(lambda key: init_variables(ThesisCNN(), key), jax.random.PRNGKey(0))
    count = count_params(variables["params"])
    print(f"ThesisCNN trainable parameters: {count:,}")
    assert count == THESIS_PARAMS == 17837
    assert count == sum(p.numel() for p in torch_thesis_model().parameters())
    assert count_params(variables["batch_stats"]) == 2 * (32 + 32 + 1)


def test_shapes_and_first_layer():
    model = ThesisCNN()
    variables = init_variables(model, jax.random.PRNGKey(1))
    x = np.random.default_rng(2).random((5, 28, 28, 1), dtype=np.float32)

    @jax.jit  # one program (each operation alone would compile on its own)
    def run(variables, x):
        return (model.apply(variables, x), model.apply(variables, x, train=True, mutable=["batch_stats"]),
                model.apply(variables, x, method=ThesisCNN.first_layer))

    eval_logits, (logits, updates), first = run(variables, x)
    assert eval_logits.shape == (5, 10)
    assert logits.shape == (5, 10) and set(updates["batch_stats"]) == {"bn1", "bn2", "bn3"}
    assert first.shape == (5, 28, 28, 32)
    # PyTorch's default init: |w| <= 1/sqrt(fan_in) (fan_in = 9 for the first conv)
    assert float(np.abs(np.asarray(variables["params"]["conv1"]["kernel"])).max()) <= 1 / 3 + 1e-6


def test_strong_cnn_shapes_and_dropout():
    model = build_model("strong")
    variables = init_variables(model, jax.random.PRNGKey(0))  # one program at -O1: 3-4x faster to compile than jit
    assert 350_000 < count_params(variables["params"]) < 420_000
    x = np.random.default_rng(2).random((4, 28, 28, 1), dtype=np.float32)

    @jax.jit
    def train_logits(key):
        return model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})[0]

    a, b = train_logits(jax.random.PRNGKey(0)), train_logits(jax.random.PRNGKey(1))
    assert a.shape == (4, 10) and not np.allclose(a, b)  # dropout is on in training
    infer = jax.jit(lambda: model.apply(variables, x))
    assert np.allclose(infer(), infer())
    assert isinstance(model, StrongCNN)


def _copy_into_torch(variables, torch_model):
    import torch

    p, s = variables["params"], variables["batch_stats"]
    convs, bns = [0, 3, 6], [1, 4, 7]
    with torch.no_grad():
        for index, name in zip(convs, ["conv1", "conv2", "conv3"], strict=False):
            torch_model[index].weight.copy_(torch.from_numpy(np.array(p[name]["kernel"]).transpose(3, 2, 0, 1).copy()))
            torch_model[index].bias.copy_(torch.from_numpy(np.array(p[name]["bias"])))
        for index, name in zip(bns, ["bn1", "bn2", "bn3"], strict=False):
            torch_model[index].weight.copy_(torch.from_numpy(np.array(p[name]["scale"])))
            torch_model[index].bias.copy_(torch.from_numpy(np.array(p[name]["bias"])))
            torch_model[index].running_mean.copy_(torch.from_numpy(np.array(s[name]["mean"])))
            torch_model[index].running_var.copy_(torch.from_numpy(np.array(s[name]["var"])))
        torch_model[10].weight.copy_(torch.from_numpy(np.array(p["dense"]["kernel"]).T))
        torch_model[10].bias.copy_(torch.from_numpy(np.array(p["dense"]["bias"])))


def test_same_function_as_the_thesis_pytorch_model():
    import torch

    model = ThesisCNN()
    variables = init_variables(model, jax.random.PRNGKey(3))
    # non-trivial running statistics so eval mode is really compared (running means of 0.5-1.5
    # zeroed every ReLU after bn3, and the logits were the dense bias whatever the image)
    rng = np.random.default_rng(0)
    variables["batch_stats"] = {
        name: {"mean": rng.normal(0, 0.1, stats["mean"].shape).astype(np.float32),
               "var": rng.uniform(0.5, 1.5, stats["var"].shape).astype(np.float32)}
        for name, stats in variables["batch_stats"].items()
    }
    torch_model = torch_thesis_model()
    _copy_into_torch(variables, torch_model)
    x = rng.random((6, 28, 28, 1), dtype=np.float32)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    torch_model.eval()
    expected = torch_model(x_torch).detach().numpy()
    assert np.ptp(expected, axis=0).max() > 1e-4  # the image reaches the logits, not only the dense bias
    eval_logits, (logits, updates) = jax.jit(  # one program for both modes
        lambda v, x: (model.apply(v, x), model.apply(v, x, train=True, mutable=["batch_stats"])))(variables, x)
    # different kernels (PyTorch's oneDNN, XLA's) sum the 288-term convolutions in different orders
    assert_close_scaled(eval_logits, expected, scale_atol=3e-5)
    torch_model.train()  # batch statistics
    assert_close_scaled(logits, torch_model(x_torch).detach().numpy(), scale_atol=3e-5)
    # running mean follows PyTorch's momentum 0.1
    np.testing.assert_allclose(updates["batch_stats"]["bn1"]["mean"], torch_model[1].running_mean.numpy(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cin,cout,k", [(1, 8, 3), (8, 8, 3), (8, 1, 3), (6, 2, 5), (5, 3, 1)])
def test_fast_conv_equals_lax_values_and_gradients(cin, cout, k):
    rng = np.random.default_rng(cin * 10 + cout)  # NumPy test data: no threefry program per shape
    x = rng.normal(size=(3, 9, 7, cin)).astype(np.float32)
    w = rng.normal(size=(k, k, cin, cout)).astype(np.float32)
    g = rng.normal(size=(3, 9, 7, cout)).astype(np.float32)
    impl = "fast"

    @jax.jit  # one program per case: the reference and the fast convolution, values and gradients
    def both(x, w, g):
        def vjp(fn):
            y, back = jax.vjp(fn, x, w)
            return (y, *back(g))

        return vjp(conv_lib.conv_xla), vjp(lambda a, b: conv_lib.conv2d(a, b, impl))

    expected, got = both(x, w, g)
    for e, o in zip(expected, got, strict=True):  # the weight gradient sums 3 x 9 x 7 = 189 products
        assert_close_scaled(o, e)


def test_conv_module_matches_flax_conv_layout():
    import flax.linen as nn

    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
    ours = conv_lib.Conv2D(4)
    reference = nn.Conv(4, (3, 3), padding="SAME")

    # the init as one program compiled at -O1, as init_variables does (a third of jit's compile time)
    variables = run_once(lambda key: ours.init(key, x), jax.random.PRNGKey(1))
    got, want = jax.jit(lambda v, x: (ours.apply(v, x), reference.apply(v, x)))(variables, x)
    assert_close_scaled(got, want)
