"""Pose encoder: ConvNeXt-V2 parity with timm, weight import, parameter counts, identity head, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
from safetensors.numpy import save_file

from dex_jax.config_loading import load_config
from dex_jax.convert.timm_convnext import convert_convnext_v2, load_convnext_v2, place_backbone
from dex_jax.motion.convnext_v2 import ConvNeXtV2
from dex_jax.motion.pose_encoder import PoseEncoder, pose_from_raw

TEST_DEPTHS, TEST_DIMS = (1, 1, 1, 1), (8, 8, 16, 16)  # configs/motion_model.py `test` pose
PAPER_POSE_PARAMS = 27_871_110


def random_timm(name, seed=0, **kwargs):
    """A timm ConvNeXt-V2 with every param perturbed (LayerNorm and GRN start at constants in timm)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_((0.02 if p.ndim > 1 else 0.2) * torch.randn_like(p))
    return model


def numpy_state_dict(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def timm_features(model, x):
    with torch.no_grad():
        return model.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


def random_images(shape, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def timm_tiny():
    return random_timm("convnextv2_tiny")


def pose_config(variant):
    return load_config(f"configs/motion_model.py:{variant}")


def param_count(tree):
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(nn.meta.unbox(tree)))


def test_convnextv2_tiny_matches_timm_forward_features(timm_tiny):
    x = random_images((1, 224, 224, 3))
    params = convert_convnext_v2(timm_tiny.state_dict(), (3, 3, 9, 3))
    ours = jax.jit(ConvNeXtV2((3, 3, 9, 3), (96, 192, 384, 768)).apply)({"params": params}, x)
    ref = timm_features(timm_tiny, x)
    assert ours.shape == ref.shape == (1, 7, 7, 768)
    assert np.abs(np.asarray(ours) - ref).max() <= 1e-4


def test_conv_mlp_variant_atto_matches_timm():
    model = random_timm("convnextv2_atto", seed=1)  # 1x1-conv MLP weights (O, I, 1, 1)
    x = random_images((1, 64, 64, 3), seed=1)
    params = convert_convnext_v2(model.state_dict(), (2, 2, 6, 2))
    ours = jax.jit(ConvNeXtV2((2, 2, 6, 2), (40, 80, 160, 320)).apply)({"params": params}, x)
    assert np.abs(np.asarray(ours) - timm_features(model, x)).max() <= 1e-4


def test_paper_pose_encoder_param_count_matches_timm_backbone_plus_head(timm_tiny):
    config = pose_config("paper")
    model = PoseEncoder(config.pose.depths, config.pose.dims)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3)))["params"]
    timm_backbone = sum(v.numel() for k, v in timm_tiny.state_dict().items() if not k.startswith("head."))
    head = 2 * 768 + 768 * 6 + 6
    assert param_count(shapes["backbone"]) == timm_backbone
    assert param_count(shapes) == timm_backbone + head == PAPER_POSE_PARAMS


@pytest.fixture(scope="module")
def small_encoder():
    """A PoseEncoder of the `test` config, its initial params, and a random batch of two 64x64 images."""
    config = pose_config("test")
    model = PoseEncoder(config.pose.depths, config.pose.dims)
    x = random_images((2, 64, 64, 3), seed=3)
    return model, jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"], x


def test_zero_initialised_head_predicts_identity_pose(small_encoder):
    model, params, x = small_encoder
    pose = jax.jit(model.apply)({"params": params}, x)
    assert set(pose) == {"yaw", "pitch", "roll", "tx", "ty", "scale"}
    for key, value in pose.items():
        assert value.shape == (2,)
        np.testing.assert_array_equal(np.asarray(value), 1.0 if key == "scale" else 0.0)


def test_pose_mapping_bounds_angles_and_keeps_scale_positive():
    raw = jnp.array([[50.0, -50.0, 0.3, -7.0, 9.0, -30.0]])
    pose = pose_from_raw(raw)
    for key in ("yaw", "pitch", "roll"):
        assert float(jnp.abs(pose[key][0])) <= np.float32(np.pi / 2)
    assert float(pose["yaw"][0]) == pytest.approx(np.pi / 2)
    assert float(pose["roll"][0]) == pytest.approx(np.pi / 2 * np.tanh(0.3), rel=1e-6)
    assert (float(pose["tx"][0]), float(pose["ty"][0])) == (-7.0, 9.0)
    assert 0.0 < float(pose["scale"][0]) < 1e-12


@pytest.mark.parametrize("shape, problem", [((1, 64, 64, 4), "3 channels"), ((1, 3, 64, 64), "3 channels"),
                                            ((64, 64, 3), "3 channels"), ((1, 48, 64, 3), "multiples of 32")])
def test_bad_input_raises_value_error_naming_shape(shape, problem):
    model = PoseEncoder(TEST_DEPTHS, TEST_DIMS)
    with pytest.raises(ValueError, match=problem) as err:
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))
    assert str(tuple(shape)) in str(err.value)


@pytest.fixture(scope="module")
def timm_small():
    return random_timm("convnextv2_atto", seed=2, depths=TEST_DEPTHS, dims=TEST_DIMS)


def test_converter_names_missing_key(timm_small):
    state = numpy_state_dict(timm_small)
    del state["stages.2.blocks.0.mlp.grn.weight"]
    with pytest.raises(ValueError, match=r"missing from checkpoint: stages\.2\.blocks\.0\.mlp\.grn\.weight \(64,\)"):
        convert_convnext_v2(state, TEST_DEPTHS)


def test_converter_names_shape_mismatch(timm_small):
    state = numpy_state_dict(timm_small)
    state["stages.1.downsample.1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"stages\.1\.downsample\.1\.weight checkpoint \(8, 8, 3, 3\) "
                                         r"vs model \(8, 8, 2, 2\)"):
        convert_convnext_v2(state, TEST_DEPTHS)


def test_converter_names_unexpected_key_when_depths_disagree(timm_small):
    with pytest.raises(ValueError, match=r"not in the model: stages\.3\.blocks\.0\.conv_dw\.weight"):
        convert_convnext_v2(numpy_state_dict(timm_small), (1, 1, 1, 0))


def test_load_reads_safetensors_and_torch_files(tmp_path, timm_small):
    expected = convert_convnext_v2(numpy_state_dict(timm_small), TEST_DEPTHS)
    save_file(numpy_state_dict(timm_small), str(tmp_path / "w.safetensors"))
    torch.save(timm_small.state_dict(), tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        loaded = load_convnext_v2(tmp_path / name, TEST_DEPTHS)
        jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, expected)
    torch.save({"model": timm_small.state_dict()}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match="flat state dict"):
        load_convnext_v2(tmp_path / "nested.pth", TEST_DEPTHS)
    with pytest.raises(ValueError, match="not found"):
        load_convnext_v2(tmp_path / "absent.pth", TEST_DEPTHS)


def test_placed_backbone_runs_inside_pose_encoder_like_timm(small_encoder, timm_small):
    model, params, x = small_encoder
    placed = place_backbone(params, convert_convnext_v2(timm_small.state_dict(), TEST_DEPTHS))
    assert isinstance(placed["backbone"]["stem_0"]["kernel"], nn.Partitioned)
    capture = jax.jit(lambda p, x: model.apply(
        {"params": p}, x, capture_intermediates=lambda m, _: isinstance(m, ConvNeXtV2)))
    _, state = capture(placed, x)
    features = state["intermediates"]["backbone"]["__call__"][0]
    assert np.abs(np.asarray(features) - timm_features(timm_small, x)).max() <= 1e-4
    wider = random_timm("convnextv2_atto", depths=TEST_DEPTHS, dims=(8, 8, 16, 32))
    with pytest.raises(ValueError, match=r"param backbone/stages_3/\S+ has shape \(32,\), the model's is \(16,\)"):
        place_backbone(params, convert_convnext_v2(wider.state_dict(), TEST_DEPTHS))
