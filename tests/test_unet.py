"""The SD-1.x UNet against diffusers 0.42.1 (random weights, float32), its animator hooks and its weight import."""

import copy
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel as TorchUNet
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.resnet import Downsample2D as TorchDownsample
from diffusers.models.resnet import ResnetBlock2D as TorchResnet
from diffusers.models.upsampling import Upsample2D as TorchUpsample
from flax.traverse_util import flatten_dict, unflatten_dict

from configs.unet_model import get_config
from dex_jax.convert.diffusers_checkpoint import flax_param_path
from dex_jax.convert.diffusers_unet import convert_unet, diffusers_config, load_unet, unet_config_from_diffusers
from dex_jax.convert.torch_state import to_flax
from dex_jax.diffusion.embeddings import timestep_embedding
from dex_jax.diffusion.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from dex_jax.diffusion.transformer import BasicTransformerBlock, reference_to_extras
from dex_jax.diffusion.unet import unet_from_config, zero_input_channels_init
from dex_jax.nn.attention import dot_product_attention, resolve_implementation

TOL = 1e-4


def perturb(module, seed=0):
    """Random weights everywhere: norm scales 1 + noise, biases noise, kernels ~ 1/sqrt(fan_in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1:
                p.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.1 * noise)
            else:
                p.copy_(noise / np.sqrt(np.prod(p.shape[1:])))
    return module.eval()


def nhwc(t):
    return jnp.asarray(t.numpy().transpose(0, 2, 3, 1))


def torch_params(module):
    """A small torch module's state dict -> Flax params with the converter's rename rules."""
    flat = {flax_param_path(k, v.ndim): jnp.asarray(to_flax(v.numpy())) for k, v in module.state_dict().items()}
    return unflatten_dict(flat)


class Case:
    """A tiny config with its perturbed diffusers UNet, converted params, inputs and reference output."""

    def __init__(self, name, batch=2, tokens=5):
        self.config = get_config(name)
        self.torch = perturb(TorchUNet(**diffusers_config(self.config)))
        g = torch.Generator().manual_seed(1)
        s = self.config.sample_size
        self.x = torch.randn(batch, 4, s, s, generator=g)
        self.t = torch.tensor([3.0, 701.0][:batch])
        self.ctx = torch.randn(batch, tokens, self.config.cross_attention_dim, generator=g)
        with torch.no_grad():
            self.ref = self.torch(self.x, self.t, self.ctx).sample.numpy().transpose(0, 2, 3, 1)
        self.module = unet_from_config(self.config)
        self.params = convert_unet(self.torch.state_dict(), self.config)
        self.inputs = (nhwc(self.x), jnp.asarray(self.t.numpy()), jnp.asarray(self.ctx.numpy()))
        self.apply = jax.jit(self.module.apply, static_argnames="mutable")
        # reference mode costs nothing extra: one compiled forward gives the output and the sown tokens
        self.out, state = self.apply({"params": self.params}, *self.inputs, mutable="reference")
        self.reference = state["reference"]


@pytest.fixture(scope="module")
def tiny_a():
    return Case("tiny_a")


@pytest.fixture(scope="module")
def tiny_b():
    return Case("tiny_b")


# ---- parity with diffusers ----

def test_resnet_down_up_blocks_match_diffusers():
    g = torch.Generator().manual_seed(0)
    x, temb = torch.randn(2, 8, 8, 8, generator=g), torch.randn(2, 32, generator=g)
    cases = [
        (TorchResnet(in_channels=8, out_channels=16, temb_channels=32, groups=4, eps=1e-6), ResnetBlock2D(16, 4), temb),
        (TorchResnet(in_channels=8, out_channels=8, temb_channels=None, groups=2, eps=1e-6), ResnetBlock2D(8, 2), None),
        (TorchDownsample(8, use_conv=True, out_channels=12, padding=1), Downsample2D(12, padding=1), None),
        (TorchDownsample(8, use_conv=True, out_channels=12, padding=0), Downsample2D(12, padding=0), None),
        (TorchUpsample(8, use_conv=True, out_channels=12), Upsample2D(12), None),
    ]
    for torch_module, flax_module, t in cases:
        perturb(torch_module)
        with torch.no_grad():
            ref = (torch_module(x, t) if isinstance(torch_module, TorchResnet) else torch_module(x)).numpy()
        args = (nhwc(x),) + (() if t is None else (jnp.asarray(t.numpy()),))
        out = jax.jit(flax_module.apply)({"params": torch_params(torch_module)}, *args)
        np.testing.assert_allclose(np.asarray(out), ref.transpose(0, 2, 3, 1), atol=TOL, rtol=0)


@pytest.mark.parametrize("dim,flip,shift", [(32, True, 0), (24, False, 1), (7, True, 1)])
def test_timestep_embedding_matches_diffusers(dim, flip, shift):
    t = torch.tensor([0.0, 1.0, 250.0, 999.0])
    ref = get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift).numpy()
    out = timestep_embedding(jnp.asarray(t.numpy()), dim, flip, shift)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["tiny_a", "tiny_b"])
def test_unet_matches_diffusers(case, request):
    c = request.getfixturevalue(case)
    assert c.out.shape == c.ref.shape
    assert np.abs(np.asarray(c.out) - c.ref).max() <= TOL


def test_sd15_param_count_matches_diffusers():
    module = unet_from_config(get_config("sd15"))
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 64, 64, 4)), jnp.zeros((1,)),
                            jnp.zeros((1, 77, 768)))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes))) == 859_520_964


# ---- attention ----

def naive_attention(q, k, v):
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


def test_attention_implementations_agree():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in [(2, 10, 3, 8), (2, 7, 3, 8), (2, 7, 3, 8)])
    ref = jax.jit(naive_attention)(q, k, v)
    for implementation in (None, "xla", "cudnn"):
        out = jax.jit(dot_product_attention, static_argnums=3)(q, k, v, implementation)
        np.testing.assert_allclose(np.asarray(out), ref, atol=1e-6)
    assert resolve_implementation("cudnn", q) == "xla"  # float32 never goes to cuDNN flash attention
    with pytest.raises(ValueError, match="attention implementation"):
        dot_product_attention(q, k, v, "flash")


@pytest.mark.skipif(not any(d.platform == "gpu" for d in jax.devices()), reason="cuDNN attention needs a GPU")
def test_cudnn_attention_matches_xla_on_gpu():
    q, k, v = (jax.random.normal(key, (2, 256, 8, 40), jnp.bfloat16) for key in jax.random.split(jax.random.key(0), 3))
    assert resolve_implementation("cudnn", q) == "cudnn"
    out = dot_product_attention(q, k, v, "cudnn").astype(jnp.float32)
    np.testing.assert_allclose(np.asarray(out), np.asarray(naive_attention(q, k, v).astype(jnp.float32)), atol=2e-2)


# ---- animator hooks ----

def test_reference_mode_sows_every_blocks_normed_tokens(tiny_a):
    reference = flatten_dict(tiny_a.reference, sep="/")
    # tiny_a: down 0 (1 layer, 16x16, 32 ch), mid (4x... 8x8, 64 ch), up 1 (2 layers, 16x16, 32 ch)
    expected = {"down_blocks_0/attentions_0/transformer_blocks_0/normed_hidden": (2, 256, 32),
                "mid_block/attentions_0/transformer_blocks_0/normed_hidden": (2, 64, 64),
                "up_blocks_1/attentions_0/transformer_blocks_0/normed_hidden": (2, 256, 32),
                "up_blocks_1/attentions_1/transformer_blocks_0/normed_hidden": (2, 256, 32)}
    assert {k: v[0].shape for k, v in reference.items()} == expected
    scale = tiny_a.params["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["norm1"]
    tokens = reference["down_blocks_0/attentions_0/transformer_blocks_0/normed_hidden"][0]
    standardised = (tokens - scale["bias"]) / scale["scale"]  # undo norm1's affine: zero mean, unit variance
    np.testing.assert_allclose(np.asarray(standardised.mean(-1)), 0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(standardised.var(-1)), 1, atol=1e-2)


def test_extra_kv_and_residual_hooks(tiny_a):
    extras = reference_to_extras(tiny_a.reference)
    for block in flatten_dict(extras, sep="/"):
        assert block.endswith("extra_kv")
    extras = unflatten_dict({**flatten_dict(extras), **{
        path[:-1] + ("residual",): jnp.zeros_like(value) for path, value in flatten_dict(extras).items()}})
    # own normed tokens as extra keys/values: every softmax weight halves and pairs up, output unchanged;
    # a zero residual adds nothing
    plain = tiny_a.out
    same = tiny_a.apply({"params": tiny_a.params}, *tiny_a.inputs, extras=extras)
    np.testing.assert_allclose(np.asarray(same), np.asarray(plain), atol=1e-5, rtol=0)

    flat = flatten_dict(extras)
    rng = np.random.default_rng(3)
    noise = {p: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for p, v in flat.items()}
    with_kv = unflatten_dict({p: noise[p] if p[-1] == "extra_kv" else v for p, v in flat.items()})
    with_residual = unflatten_dict({p: noise[p] if p[-1] == "residual" else v for p, v in flat.items()})
    for changed in (with_kv, with_residual):
        out = tiny_a.apply({"params": tiny_a.params}, *tiny_a.inputs, extras=changed)
        assert np.abs(np.asarray(out) - np.asarray(plain)).max() > 1e-2


@pytest.fixture(scope="module")
def block():
    """A BasicTransformerBlock with expression attention, its initial params and inputs."""
    module = BasicTransformerBlock(dim=16, heads=2, head_dim=8, expression_dim=10)
    rng = np.random.default_rng(0)
    x, ctx, expression = (jnp.asarray(rng.standard_normal(shape), jnp.float32)
                          for shape in [(2, 6, 16), (2, 3, 12), (2, 4, 10)])
    params = nn.unbox(jax.jit(module.init)(jax.random.key(0), x, ctx, expression=expression)["params"])
    return module, params, x, ctx, expression


def test_expression_attention_starts_as_a_no_op(block):
    module, params, x, ctx, expression = block
    assert set(params) == {"norm1", "attn1", "norm2", "attn2", "norm_expr", "attn_expr", "norm3", "ff"}
    assert not np.any(np.asarray(params["attn_expr"]["to_out_0"]["kernel"]))
    apply = jax.jit(module.apply)
    without = apply({"params": params}, x, ctx)
    np.testing.assert_array_equal(np.asarray(apply({"params": params}, x, ctx, expression=expression)), without)
    params = jax.tree.map(lambda a: a, params)
    params["attn_expr"]["to_out_0"]["kernel"] = jnp.ones_like(params["attn_expr"]["to_out_0"]["kernel"])
    assert np.abs(np.asarray(apply({"params": params}, x, ctx, expression=expression)) - without).max() > 1e-2


def test_block_extras_broadcast_a_batch_of_one_and_reject_bad_shapes(block):
    module, params, x, ctx, _ = block
    tokens = jnp.asarray(np.random.default_rng(2).standard_normal((1, 5, 16)), jnp.float32)
    apply = jax.jit(module.apply)
    one = apply({"params": params}, x, ctx, extras={"extra_kv": tokens})
    both = apply({"params": params}, x, ctx, extras={"extra_kv": jnp.concatenate([tokens, tokens])})
    np.testing.assert_allclose(np.asarray(one), np.asarray(both), atol=1e-6)
    with pytest.raises(ValueError, match="extra_kv must have shape"):
        module.apply({"params": params}, x, ctx, extras={"extra_kv": jnp.ones((2, 5, 8))})
    with pytest.raises(ValueError, match="residual must have shape"):
        module.apply({"params": params}, x, ctx, extras={"residual": jnp.ones((3, 6, 16))})


def test_animator_shaped_unet_loads_sd_weights_unchanged(tiny_a):
    """conv_in with zero-initialised extra channels and zero-initialised expression attention: same output."""
    config = get_config("tiny_a")
    config.extra_in_channels, config.expression_dim = 6, 10
    params = convert_unet(tiny_a.torch.state_dict(), config)
    assert params["conv_in"]["kernel"].shape == (3, 3, 10, 32)
    module = unet_from_config(config)
    x, t, ctx = tiny_a.inputs
    rng = np.random.default_rng(4)
    extra = jnp.asarray(rng.standard_normal(x.shape[:3] + (6,)), jnp.float32)
    expression = jnp.asarray(rng.standard_normal((2, 7, 10)), jnp.float32)
    out = jax.jit(module.apply)({"params": params}, jnp.concatenate([x, extra], -1), t, ctx, expression=expression)
    np.testing.assert_allclose(np.asarray(out), np.asarray(tiny_a.out), atol=1e-5, rtol=0)
    kernel = zero_input_channels_init(nn.initializers.lecun_normal(), 4)(jax.random.key(0), (3, 3, 10, 32))
    assert not np.any(np.asarray(kernel[:, :, 4:])) and np.all(np.abs(np.asarray(kernel[:, :, :4])).sum((0, 1, 3)) > 0)


# ---- bad input and weight import ----

def test_bad_inputs_get_one_line_errors(tiny_a):
    x, t, ctx = tiny_a.inputs
    with pytest.raises(ValueError, match="4 channels"):
        tiny_a.module.apply({"params": tiny_a.params}, x[..., :3], t, ctx)
    with pytest.raises(ValueError, match="multiples of 2"):
        tiny_a.module.apply({"params": tiny_a.params}, x[:, :15, :15], t, ctx)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        tiny_a.module.apply({"params": tiny_a.params}, x, t, ctx[..., :8])
    with pytest.raises(ValueError, match="expression_dim=None"):
        tiny_a.module.apply({"params": tiny_a.params}, x, t, ctx, expression=jnp.ones((2, 3, 4)))


def test_mismatched_checkpoint_lists_keys(tiny_a):
    state = dict(tiny_a.torch.state_dict())
    state["conv_in.weight"] = torch.zeros(32, 5, 3, 3)
    del state["mid_block.resnets.1.conv1.bias"]
    state["add_embedding.linear_1.weight"] = torch.zeros(4, 4)
    with pytest.raises(ValueError) as err:
        convert_unet(state, tiny_a.config)
    message = str(err.value)
    assert "\n" not in message
    assert "conv_in.weight checkpoint (32, 5, 3, 3) vs model (32, 4, 3, 3)" in message
    assert "mid_block.resnets_1.conv1.bias" in message
    assert "add_embedding.linear_1.weight (4, 4)" in message
    with pytest.raises(ValueError, match="original"):
        convert_unet({"model.diffusion_model.input_blocks.0.0.weight": np.zeros(1)}, tiny_a.config)


def test_load_unet_reads_a_diffusers_folder_and_rejects_other_files(tiny_a, tmp_path):
    folder = tmp_path / "unet"
    copy.deepcopy(tiny_a.torch).to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    module, params = load_unet(tmp_path, dtype="bfloat16")  # a pipeline folder: finds unet/
    assert module.dtype == jnp.bfloat16
    expected = jax.tree.map(lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32)), tiny_a.params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params, expected)
    assert unet_config_from_diffusers(json.loads((folder / "config.json").read_text())).to_dict() == \
        get_config("tiny_a").to_dict()

    (tmp_path / "model.ckpt").write_bytes(b"PK\x03\x04 not safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    for path, match in [(tmp_path / "model.ckpt", "not a .safetensors file or a diffusers folder"),
                        (tmp_path / "bad.safetensors", "not a readable safetensors file"),
                        (tmp_path / "missing", "not a .safetensors file or a diffusers folder")]:
        with pytest.raises(ValueError, match=match) as err:
            load_unet(path, config=get_config("tiny_a"))
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unsupported UNet config: class_embed_type"):
        unet_config_from_diffusers({"class_embed_type": "timestep"})
    with pytest.raises(ValueError, match="unsupported down_block_types"):
        unet_from_config(unet_config_from_diffusers({"down_block_types": ["AttnDownBlock2D"] * 4}))


def test_sd15_diffusers_config_maps_to_ours():
    sd15_unet_config_json = {  # stable-diffusion-v1-5/unet/config.json
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
        "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
        "cross_attention_dim": 768, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                         "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
        "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
    assert unet_config_from_diffusers(sd15_unet_config_json).to_dict() == get_config("sd15").to_dict()

