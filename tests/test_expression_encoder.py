"""Expression encoder: FAN trunk parity with face-alignment, weight import, sizes and bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
from face_alignment.models import FAN as TorchFAN

from dex_jax.config_loading import load_config
from dex_jax.convert.face_alignment_fan import convert_fan, load_fan, with_fan_trunk
from dex_jax.motion.expression_encoder import ExpressionEncoder
from dex_jax.motion.fan import FAN

PARITY_SIZE = 128
fan_apply = jax.jit(FAN().apply)


def _expression_config(variant):
    return dict(load_config(f"configs/motion_model.py:{variant}").expression)


def _randomize(model, seed):
    """Redraw every parameter and BatchNorm running statistic, so BN folding is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
            elif isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (1.0 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=generator)
    return model.eval()


def _nhwc(tensor):
    return jnp.asarray(tensor.permute(0, 2, 3, 1).numpy())


@pytest.fixture(scope="module")
def torch_fan():
    return _randomize(TorchFAN(num_modules=1), seed=0)


@pytest.fixture(scope="module")
def fan_params(torch_fan):
    return convert_fan(torch_fan.state_dict())


def _torch_outputs(model, image):
    """Heatmaps of the first stack and the trunk features (ReLU of bn_end0) that feed them."""
    captured = {}
    hook = model.bn_end0.register_forward_hook(lambda mod, inp, out: captured.update(features=out.relu()))
    with torch.no_grad():
        heatmaps = model(image)[0]
    hook.remove()
    return heatmaps, captured["features"]


def test_fan_matches_face_alignment(torch_fan, fan_params):
    image = torch.rand(1, 3, PARITY_SIZE, PARITY_SIZE, generator=torch.Generator().manual_seed(1))
    want_heatmaps, want_features = _torch_outputs(torch_fan, image)
    heatmaps, features = fan_apply({"params": fan_params}, _nhwc(image))
    assert heatmaps.shape == (1, PARITY_SIZE // 4, PARITY_SIZE // 4, 68)
    assert float(want_heatmaps.abs().max()) > 0.1
    np.testing.assert_allclose(heatmaps, _nhwc(want_heatmaps), rtol=0, atol=1e-4)
    np.testing.assert_allclose(features, _nhwc(want_features), rtol=0, atol=1e-4)


def test_first_stack_of_a_two_stack_fan_loads():
    model = _randomize(TorchFAN(num_modules=2), seed=2)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    want, _ = _torch_outputs(model, image)
    heatmaps, _ = fan_apply({"params": convert_fan(model.state_dict())}, _nhwc(image))
    np.testing.assert_allclose(heatmaps, _nhwc(want), rtol=0, atol=1e-4)


def test_encoder_with_imported_trunk_sees_the_crop_in_unit_range(torch_fan, fan_params):
    encoder = ExpressionEncoder(image_size=64)
    crop = jax.random.uniform(jax.random.key(4), (1, 64, 64, 3), minval=-1.0, maxval=1.0)
    abstract = jax.eval_shape(encoder.init, jax.random.key(5), crop)["params"]
    params = with_fan_trunk(jax.tree.map(lambda leaf: jnp.zeros(leaf.shape), abstract), fan_params)
    run = jax.jit(lambda p, x: encoder.apply({"params": p}, x, capture_intermediates=lambda m, _: m.name == "fan"))
    latent, state = run(params, crop)
    heatmaps, _ = state["intermediates"]["fan"]["__call__"][0]
    want, _ = _torch_outputs(torch_fan, torch.from_numpy(np.array((crop + 1) / 2)).permute(0, 3, 1, 2))
    np.testing.assert_allclose(heatmaps, _nhwc(want), rtol=0, atol=1e-4)
    assert latent.shape == (1, 512)


def _count(params):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nn.meta.unbox(params)))


def test_paper_size_parameter_counts(torch_fan):
    cfg = _expression_config("paper")
    encoder = ExpressionEncoder(**cfg)
    crop = jax.ShapeDtypeStruct((2, cfg["image_size"], cfg["image_size"], 3), jnp.float32)
    params = jax.eval_shape(encoder.init, jax.random.key(0), crop)["params"]
    assert jax.eval_shape(encoder.apply, {"params": params}, crop).shape == (2, 512)
    assert _count(params["fan"]) == sum(p.numel() for p in torch_fan.parameters())
    c, k = cfg["channels"], cfg["num_landmarks"]
    head = (9 * (c + k) * c + c) + (9 * c * 2 * c + 2 * c) + (2 * c * cfg["latent_dim"] + cfg["latent_dim"])
    assert _count(params) - _count(params["fan"]) == head
    heatmaps, features = jax.eval_shape(FAN().apply, {"params": params["fan"]}, crop)
    assert heatmaps.shape == (2, 56, 56, 68) and features.shape == (2, 56, 56, 256)


def test_tiny_encoder_runs():
    cfg = _expression_config("tiny")
    encoder = ExpressionEncoder(**cfg)
    crops = jax.random.uniform(jax.random.key(0), (2, cfg["image_size"], cfg["image_size"], 3), minval=-1.0, maxval=1.0)
    latent = jax.jit(lambda c: encoder.apply(encoder.init(jax.random.key(1), c), c))(crops)
    assert latent.shape == (2, cfg["latent_dim"])
    assert bool(jnp.isfinite(latent).all())
    assert float(jnp.abs(latent[0] - latent[1]).max()) > 0


@pytest.mark.parametrize("shape", [(1, 63, 63, 3), (1, 64, 64, 4), (64, 64, 3)])
def test_wrong_crop_shape_raises(shape):
    encoder = ExpressionEncoder(**{**_expression_config("test"), "image_size": 64})
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\)"):
        encoder.init(jax.random.key(0), jnp.zeros(shape))


def test_load_fan_reads_torch_and_safetensors_files(torch_fan, fan_params, tmp_path):
    torch.save(torch_fan.state_dict(), tmp_path / "fan.pth")
    safetensors.torch.save_file(torch_fan.state_dict(), tmp_path / "fan.safetensors")
    for name in ("fan.pth", "fan.safetensors"):
        loaded = load_fan(tmp_path / name)
        jax.tree.map(np.testing.assert_array_equal, loaded, fan_params)


def test_converter_names_first_missing_key(torch_fan):
    state_dict = dict(torch_fan.state_dict())
    del state_dict["m0.b2_plus_1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"\(0 mismatched, 1 missing, 0 unexpected\): "
                                         r"missing from checkpoint: m0\.b2_plus_1\.bn2\.running_var \(128,\)$"):
        convert_fan(state_dict)


def test_converter_names_wrong_shape(torch_fan):
    state_dict = dict(torch_fan.state_dict())
    state_dict["l0.weight"] = torch.zeros(98, 256, 1, 1)
    with pytest.raises(ValueError, match=r"l0\.weight checkpoint \(98, 256, 1, 1\) vs model \(68, 256, 1, 1\)"):
        convert_fan(state_dict)


def test_trunk_of_another_config_is_refused(fan_params):
    cfg = _expression_config("tiny")
    encoder = ExpressionEncoder(**cfg)
    crop = jax.ShapeDtypeStruct((1, cfg["image_size"], cfg["image_size"], 3), jnp.float32)
    params = jax.eval_shape(encoder.init, jax.random.key(0), crop)["params"]
    with pytest.raises(ValueError, match="configs differ"):
        with_fan_trunk(params, fan_params)


def test_group_norm_trunk_has_the_affine_trunks_params_and_ignores_input_contrast():
    image = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    group, affine = FAN(16, 1, 4, norm="group"), FAN(16, 1, 4, norm="affine")
    params = group.init(jax.random.key(1), image)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, affine.init(jax.random.key(1), image))
    for model, invariant in ((group, True), (affine, False)):
        _, features = model.apply(params, image)
        _, scaled = model.apply(params, 3.0 * image)
        assert np.allclose(features, scaled, atol=1e-4) == invariant


def test_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="FAN norm must be one of"):
        FAN(16, 1, 4, norm="batch").init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_encoders_of_configs_without_norm_keep_the_affine_trunk():
    cfg = _expression_config("tiny")
    del cfg["norm"]
    assert cfg != _expression_config("tiny") and ExpressionEncoder(**cfg).norm == "affine"


def test_grid_pool_head_keeps_where_a_feature_is():
    """pool_grid n: the dense layer reads an n x n grid of the head's map (n*n times the channels); a grid of 1 is
    the global mean, the same function with the same params; a grid that does not divide the map is refused."""
    cfg = {**_expression_config("test"), "image_size": 64}  # head map 4x4
    crops = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3), minval=-1.0, maxval=1.0)
    mean, one, grid = (ExpressionEncoder(**{**cfg, "pool_grid": n}) for n in (0, 1, 4))
    params = mean.init(jax.random.key(1), crops)
    np.testing.assert_allclose(one.apply(params, crops), mean.apply(params, crops), atol=1e-6)
    grid_params = nn.unbox(grid.init(jax.random.key(1), crops))
    channels = 2 * cfg["channels"]
    assert grid_params["params"]["head_dense"]["kernel"].shape == (16 * channels, cfg["latent_dim"])
    assert grid.apply(grid_params, crops).shape == (2, cfg["latent_dim"])
    # one active position (row 3, column 0) of a 4x4 map of 2 channels: each grid cell keeps its own average
    feature = np.zeros((1, 4, 4, 2), np.float32)
    feature[0, 3, 0] = (8.0, 16.0)
    pooled = {n: np.asarray(ExpressionEncoder(**{**cfg, "pool_grid": n})._pool(jnp.asarray(feature)))[0]
              for n in (0, 2, 4)}
    np.testing.assert_array_equal(pooled[0], [0.5, 1.0])
    np.testing.assert_array_equal(np.flatnonzero(pooled[4]), [24, 25])  # cell 3 * 4 + 0, two channels
    np.testing.assert_array_equal(pooled[2], [0, 0, 0, 0, 2.0, 4.0, 0, 0])  # cell (1, 0) averages 4 positions
    with pytest.raises(ValueError, match="pool_grid 3 does not divide the head's 4x4 map"):
        ExpressionEncoder(**{**cfg, "pool_grid": 3}).init(jax.random.key(0), crops)
