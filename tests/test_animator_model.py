"""The DeX animator model (dex_jax.animator) on the `test` config: backbone equivalence at init, reference warping,
the reference cache, gradients into every new layer, and the paper animator's parameter counts."""

import math
from collections import Counter

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from configs.animator_model import get_config
from dex_jax import geometry
from dex_jax.animator.conditioning import FULL, NO_EXPRESSION, NOTHING, make_condition, ray_map_input
from dex_jax.animator.model import (build_animator, denoise, init_inputs, parameter_counts, reference_features,
                                    with_backbone)
from dex_jax.animator.reference import transformer_blocks
from dex_jax.animator.reference_warp import warp_reference_tokens
from dex_jax.diffusion.unet import unet_from_config

SD15_UNET_PARAMS = 859_520_964
warp = jax.jit(warp_reference_tokens, static_argnums=(1, 2))
SOURCES, FRAMES = 2, 3
VARIANTS = [FULL, NO_EXPRESSION, NOTHING] * SOURCES


def random_poses(rng, n):
    """n non-identity head poses: angles within 0.4 rad, shifts within 0.1, scale 0.9-1.1."""
    angles = rng.uniform(-0.4, 0.4, (3, n))
    shifts = rng.uniform(-0.1, 0.1, (2, n))
    return geometry.pose_from_params(*angles, *shifts, rng.uniform(0.9, 1.1, n))


def make_inputs(model, seed):
    """Source latents, noisy latents, timesteps and a condition: SOURCES x FRAMES rows, every variant."""
    rng = np.random.default_rng(seed)
    side = 8
    source_index = np.repeat(np.arange(SOURCES), FRAMES)
    source_pose = random_poses(rng, SOURCES)[source_index]
    condition = make_condition(source_pose, random_poses(rng, len(source_index)),
                               rng.standard_normal((len(source_index), model.expression_latent_dim)), source_index)
    condition["variant"] = jnp.asarray(VARIANTS, jnp.int32)
    sources = jnp.asarray(rng.standard_normal((SOURCES, side, side, 4)), jnp.float32)
    noisy = jnp.asarray(rng.standard_normal((len(source_index), side, side, 4)), jnp.float32)
    timesteps = jnp.asarray(rng.integers(0, 1000, len(source_index)), jnp.int32)
    return sources, noisy, timesteps, condition


def is_new_layer(path):
    """A param the animator adds to its UNets (the denoiser's conv_in kernel counts: it holds the ray-map inputs)."""
    if path[0] == "reference_unet":
        return False
    if path[0] == "denoising_unet":
        return "attn_expr" in path or "norm_expr" in path or path[1:] == ("conv_in", "kernel")
    return True


class Animator:
    """The `test`-config animator, its backbone UNet, params with that backbone loaded, and jitted calls."""

    def __init__(self):
        self.config = get_config("test")
        self.model = build_animator(self.config)
        init = nn.unbox(jax.jit(self.model.init)(jax.random.key(0), *init_inputs(self.model, 8, 8))["params"])
        self.backbone = unet_from_config(self.config.unet)
        self.backbone_params = init["reference_unet"]  # one plain UNet's params (saves compiling another init)
        self.params = with_backbone(init, self.backbone_params)
        self.reference = jax.jit(lambda params, source: reference_features(self.model, params, source))
        self.denoise = self.jit_denoise(self.model)
        self.backbone_apply = jax.jit(self.backbone.apply)

    @staticmethod
    def jit_denoise(model):
        return jax.jit(lambda params, noisy, t, condition, reference:
                       denoise(model, params, noisy, t, condition, reference))

    def backbone_prediction(self, noisy, timesteps):
        """The backbone UNet on the noisy latent, with the animator's learned context tokens."""
        context = self.params["context_tokens"]
        return self.backbone_apply({"params": self.backbone_params}, noisy, timesteps,
                                   jnp.broadcast_to(context, (noisy.shape[0],) + context.shape))


def perturbed(params, seed=5):
    """params with every new param (warp convs, expression attention, ray-map input channels, context, null
    latents) set to random values, so that every branch of the animator acts."""
    rng = np.random.default_rng(seed)
    flat = flatten_dict(params)
    for path, value in flat.items():
        if not is_new_layer(path):
            continue
        noise = jnp.asarray(0.3 * rng.standard_normal(value.shape), value.dtype)
        if path[1:] == ("conv_in", "kernel"):
            noise = value.at[:, :, 4:].set(noise[:, :, 4:])
        flat[path] = noise
    return unflatten_dict(flat)


@pytest.fixture(scope="module")
def animator():
    return Animator()


def max_diff(a, b):
    """The largest absolute difference of two arrays."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def test_zero_initialised_animator_equals_its_backbone(animator):
    """At init (converted backbone weights in both UNets), every added branch adds exactly nothing.

    With reference attention off, every row, whatever its variant, poses (ray maps non-zero) and expression,
    equals the plain backbone on the noisy latent. With it on, the unconditional rows (the null condition
    drops the reference: their self-attention is masked to their own tokens) still equal the backbone, while
    the rows that keep the reference do not. (Both models have the same params: the switch adds none.)
    """
    config = get_config("test")
    config.reference_attention = False
    off = Animator.jit_denoise(build_animator(config))
    sources, noisy, timesteps, condition = make_inputs(animator.model, seed=0)
    reference = animator.reference(animator.params, sources)
    expected = np.asarray(animator.backbone_prediction(noisy, timesteps))
    assert max_diff(off(animator.params, noisy, timesteps, condition, reference), expected) <= 1e-6

    with_reference = np.asarray(animator.denoise(animator.params, noisy, timesteps, condition, reference))
    nothing = np.asarray(condition["variant"]) == NOTHING
    assert max_diff(with_reference[nothing], expected[nothing]) <= 1e-5  # masking reorders the softmax's sums
    assert min(max_diff(with_reference[i], expected[i]) for i in np.flatnonzero(~nothing)) > 1e-3


def test_with_backbone_names_the_first_mismatches(animator):
    flat = flatten_dict(animator.backbone_params)
    del flat[("mid_block", "resnets_1", "conv1", "bias")]
    flat[("conv_in", "kernel")] = jnp.zeros((3, 3, 5, 16))
    flat[("add_embedding", "kernel")] = jnp.zeros((2, 2))
    with pytest.raises(ValueError) as err:
        with_backbone(animator.params, unflatten_dict(flat))
    message = str(err.value)
    assert "\n" not in message
    for part in ("missing mid_block.resnets_1.conv1.bias", "unexpected add_embedding.kernel",
                 "conv_in.kernel (3, 3, 5, 16) vs model (3, 3, 4, 16)"):
        assert part in message


def test_identity_pose_leaves_reference_tokens_and_ray_maps_unchanged(animator):
    sources, *_ = make_inputs(animator.model, seed=1)
    reference = flatten_dict(animator.reference(animator.params, sources))
    pose = random_poses(np.random.default_rng(2), SOURCES)
    for block in transformer_blocks(animator.model.denoising_unet):
        tokens = reference[block.path]
        warped = warp(tokens, *block.grid(8, 8), pose, pose)
        assert max_diff(warped, tokens) <= 1e-5, block.path
    rays = np.asarray(ray_map_input(pose, pose, 8, 8))
    assert np.abs(rays).max() > 0.05  # a non-identity pose: the ray maps are not trivially zero
    np.testing.assert_array_equal(rays[..., :3], rays[..., 3:])


ROLL_90_YAW_180 = np.array([[0.0, -1.0, 0.0, 0.25], [-1.0, 0.0, 0.0, -0.25], [0.0, 0.0, -1.0, 0.5]])
YAW_180 = np.array([[-1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.5], [0.0, 0.0, -1.0, 0.0]])


@pytest.mark.parametrize("height,width,channels,motion,point", [
    (8, 8, 12, ROLL_90_YAW_180, dict(depth=1, row=2, col=5, channel=2)),
    (8, 4, 8, YAW_180, dict(depth=0, row=1, col=3, channel=1)),
])
def test_warp_moves_a_point_feature_where_pd_ps_inverse_puts_it(height, width, channels, motion, point):
    """A single non-zero token feature, placed by the documented axis order (token row*w + col, channel
    k * (h/2) + d), lands where P_d P_s^-1 maps its voxel centre, for two distinct non-identity poses with
    P_d = M P_s (M maps voxel centres onto voxel centres, so the trilinear result is one exact spike)."""
    depth = height // 2
    source_pose = np.asarray(geometry.pose_from_params(0.3, -0.2, 0.1, 0.05, -0.1, 1.1), np.float64)
    driving_pose = (np.vstack([motion, [0, 0, 0, 1]]) @ np.vstack([source_pose, [0, 0, 0, 1]]))[:3]

    def centre(index, size):
        return (2 * index + 1) / size - 1

    def index(coord, size):
        value = ((coord + 1) * size - 1) / 2
        assert abs(value - round(value)) < 1e-9 and 0 <= round(value) < size
        return round(value)

    x, y, z = motion @ np.array([centre(point["col"], width), centre(point["row"], height),
                                 centre(point["depth"], depth), 1.0])
    col, row, d = index(x, width), index(y, height), index(z, depth)
    tokens = np.zeros((1, height * width, channels), np.float32)
    tokens[0, point["row"] * width + point["col"], point["channel"] * depth + point["depth"]] = 1.0
    warped = np.array(warp(jnp.asarray(tokens), height, width, jnp.asarray(source_pose[None], jnp.float32),
                           jnp.asarray(driving_pose[None], jnp.float32)))
    target = (0, row * width + col, point["channel"] * depth + d)
    assert abs(warped[target] - 1.0) < 1e-4
    warped[target] = 0.0
    assert np.abs(warped).sum() < 1e-4


def test_cached_reference_features_match_recomputing_them(animator):
    params = perturbed(animator.params)
    sources, noisy, timesteps, condition = make_inputs(animator.model, seed=3)
    cached = animator.reference(params, sources)
    shapes = {path: value.shape for path, value in flatten_dict(cached).items()}
    assert shapes == {block.path: (SOURCES, math.prod(block.grid(8, 8)), block.channels)
                      for block in transformer_blocks(animator.model.denoising_unet)}

    @jax.jit
    def recomputed(noisy, timesteps):
        out, _ = animator.model.apply({"params": params}, sources, noisy, timesteps, condition, mutable=["reference"])
        return out

    outputs = []
    for step in range(2):  # the same cache for two steps of different noise and timestep
        noisy_step, t_step = noisy * (1 + step), (timesteps + 300 * step) % 1000
        outputs.append(np.asarray(animator.denoise(params, noisy_step, t_step, condition, cached)))
        assert max_diff(outputs[-1], recomputed(noisy_step, t_step)) <= 1e-5  # two programs, two summation orders
    swapped = {**condition, "source_index": SOURCES - 1 - condition["source_index"]}
    other = np.asarray(animator.denoise(params, noisy, timesteps, swapped, cached))
    keeps_reference = np.asarray(condition["variant"]) != NOTHING
    assert max_diff(other[keeps_reference], outputs[0][keeps_reference]) > 1e-3  # each frame reads its source


def test_one_gradient_step_reaches_every_new_layer(animator):
    """Gradients of an epsilon-MSE loss through the reference pass and the denoiser, at init and after one step.

    At init the zero-initialised projections (1x1 warp convs, expression out-projections, ray-map input
    channels of conv_in) and the learned context get non-zero gradients, while everything that only feeds a
    zero projection (the expression attention's norm, queries, keys, values and the two null latents) gets
    exactly zero: that is what zero-initialising an output means. After one SGD step on all params those
    projections are non-zero, and every param of both UNets and every new layer gets a non-zero gradient,
    except the reference UNet's tail that nothing reads: its last transformer block after norm1, that
    attention's proj_out, and conv_norm_out/conv_out.
    """
    model = animator.model
    sources, noisy, timesteps, condition = make_inputs(model, seed=4)
    target = jnp.asarray(np.random.default_rng(5).standard_normal(noisy.shape), jnp.float32)

    def loss(params):
        prediction = denoise(model, params, noisy, timesteps, condition, reference_features(model, params, sources))
        return jnp.mean((prediction - target) ** 2)

    grad = jax.jit(jax.grad(loss))

    def zero_leaves(grads):
        flat = flatten_dict(grads)
        zero = {path for path, g in flat.items() if not np.any(np.asarray(g))}
        ray_channels = np.asarray(flat[("denoising_unet", "conv_in", "kernel")])[:, :, 4:]
        return zero | ({("ray_map_input",)} if not np.any(ray_channels) else set())

    paths = flatten_dict(animator.params)
    last = ("reference_unet",) + transformer_blocks(model.reference_unet)[-1].path
    unread = [("reference_unet", "conv_norm_out"), ("reference_unet", "conv_out"), last[:3] + ("proj_out",)]
    unread += [last + (name,) for name in ("attn1", "norm2", "attn2", "norm3", "ff")]
    tail = {path for path in paths if any(path[:len(prefix)] == prefix for prefix in unread)}
    before_zero_projections = {path for path in paths if "norm_expr" in path
                               or ("attn_expr" in path and path[-2] in ("to_q", "to_k", "to_v"))
                               or path[0] in ("null_no_expression", "null_nothing")}
    assert len(before_zero_projections) == 5 * len(transformer_blocks(model.denoising_unet)) + 2  # norm: 2, q, k, v
    grads = grad(animator.params)
    assert zero_leaves(grads) == tail | before_zero_projections

    stepped = jax.tree.map(lambda p, g: p - 0.1 * g, animator.params, grads)
    assert zero_leaves(grad(stepped)) == tail


def test_paper_animator_parameter_counts():
    config = get_config("paper")
    counts = parameter_counts(config)
    print("paper animator parameters:", {part: f"{count:,}" for part, count in counts.items()},
          f"total {sum(counts.values()):,}")
    unet = build_animator(config).denoising_unet
    channels = [block.channels for block in transformer_blocks(unet)]
    assert Counter(channels) == {320: 5, 640: 5, 1280: 6}
    assert counts["reference_unet"] == counts["denoising_unet"] == SD15_UNET_PARAMS
    assert counts["reference_unet"] + counts["denoising_unet"] + counts["ray_map_input"] == \
        2 * SD15_UNET_PARAMS + 6 * 320 * 3 * 3
    token_dim = 16
    # per block: norm_expr (scale, bias), to_q (c x c), to_k and to_v (16 x c), to_out_0 (c x c + bias)
    assert counts["expression_attention"] == sum(2 * c + c * c + 2 * token_dim * c + c * c + c for c in channels)
    assert counts["warp_projection"] == sum(c * c + c for c in channels)  # 1x1 conv c -> c with bias
    assert counts["context_tokens"] == config.context_length * 768
    assert counts["null_latents"] == 2 * 512


def test_bad_configs_and_inputs_get_one_line_errors(animator):
    def build_error(**changes):
        config = get_config("test")
        for key, value in changes.items():
            node, *rest = key.split(".")
            (config[node] if rest else config)[rest[0] if rest else node] = value
        with pytest.raises(ValueError) as err:
            build_animator(config)
        assert "\n" not in str(err.value)
        return str(err.value)

    message = build_error(**{"unet.block_out_channels": (18, 36), "unet.norm_num_groups": 2})
    assert "down_blocks_0/attentions_0/transformer_blocks_0 at a 8x8 latent" in message and "2c/h = 36/8" in message
    assert "h must be even" in build_error(**{"unet.sample_size": 6})
    assert "null_drops" in build_error(null_drops=("reference", "pose"))
    assert "context" in build_error(context="clip")
    assert "does not split" in build_error(expression_latent_dim=12)
    assert "plain backbone" in build_error(**{"unet.extra_in_channels": 6})

    sources, noisy, timesteps, condition = make_inputs(animator.model, seed=6)
    reference = animator.reference(animator.params, sources)
    bad_inputs = [
        ({**condition, "driving_pose": condition["driving_pose"][:, :2]}, reference, "driving_pose must have shape"),
        ({k: v for k, v in condition.items() if k != "variant"}, reference, "needs exactly the keys"),
        (condition, {"mid_block": reference["mid_block"]}, "reference features do not fit"),
    ]
    for bad_condition, bad_reference, match in bad_inputs:
        with pytest.raises(ValueError, match=match):
            denoise(animator.model, animator.params, noisy, timesteps, bad_condition, bad_reference)
