"""AutoencoderKL parity with diffusers on two tiny configs, the SD-1.5 param count, and weight-import errors."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from safetensors.torch import save_file

from configs.vae_model import get_config
from dex_jax.convert.diffusers_vae import convert_vae, load_vae, param_shapes
from dex_jax.diffusion.vae import DiagonalGaussian, vae_from_config

TINY = ["tiny_a", "tiny_b"]


def _torch_vae(name, seed=0):
    """diffusers' AutoencoderKL for our config `name`, every parameter perturbed away from its init."""
    c = get_config(name)
    torch.manual_seed(seed)
    model = TorchAutoencoderKL(
        in_channels=c.in_channels, out_channels=c.out_channels, latent_channels=c.latent_channels,
        block_out_channels=tuple(c.block_out_channels), layers_per_block=c.layers_per_block,
        norm_num_groups=c.norm_num_groups, scaling_factor=c.scaling_factor,
        down_block_types=("DownEncoderBlock2D",) * len(c.block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(c.block_out_channels)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _apply(module, params, x, method="__call__"):
    """The module's `method` jitted: one compile instead of hundreds of eager op dispatches."""
    return jax.jit(functools.partial(module.apply, method=method))({"params": params}, jnp.asarray(x))


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("name", TINY)
def test_encode_decode_match_diffusers(name):
    torch_vae = _torch_vae(name)
    config = get_config(name)
    module = vae_from_config(config)
    params = convert_vae(torch_vae.state_dict(), config)
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    latents = rng.standard_normal((2, 16 // module.downsample_factor, 16 // module.downsample_factor, 4))
    latents = latents.astype(np.float32)
    with torch.no_grad():
        ref_posterior = torch_vae.encode(_nchw(image)).latent_dist
        ref_image = torch_vae.decode(_nchw(latents)).sample
    posterior = _apply(module, params, image, "encode")
    decoded = _apply(module, params, latents, "decode")
    for ours, ref in ((posterior.mean, ref_posterior.mean), (posterior.logvar, ref_posterior.logvar),
                      (decoded, ref_image)):
        assert ours.shape == _nhwc(ref).shape
        np.testing.assert_allclose(np.asarray(ours), _nhwc(ref), rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(posterior.kl()), ref_posterior.kl().numpy(), rtol=1e-4)
    assert float(jnp.abs(decoded).mean()) > 1e-2


def test_diagonal_gaussian_sample_mode_kl():
    moments = jnp.concatenate([jnp.full((1, 2, 2, 4), 0.5), jnp.full((1, 2, 2, 4), -50.0)], axis=-1)
    gaussian = DiagonalGaussian.from_moments(moments)
    assert float(gaussian.logvar.min()) == -30.0  # clamped like diffusers
    np.testing.assert_array_equal(gaussian.mode(), gaussian.mean)
    draw = gaussian.sample(jax.random.key(0))
    assert draw.shape == (1, 2, 2, 4) and float(jnp.abs(draw - 0.5).max()) < 1e-5
    standard = DiagonalGaussian(jnp.zeros((3, 2, 2, 4)), jnp.zeros((3, 2, 2, 4)))
    np.testing.assert_allclose(standard.kl(), 0.0, atol=1e-7)


def test_paper_size_param_count():
    shapes = param_shapes(vae_from_config(get_config("sd15")))
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == 83_653_863


def test_load_vae_from_folder_and_file(tmp_path):
    torch_vae = _torch_vae("tiny_b", seed=1)
    torch_vae.save_pretrained(tmp_path / "pipeline" / "vae")
    module, params = load_vae(tmp_path / "pipeline")
    assert module.block_out_channels == (12, 24, 24) and module.norm_num_groups == 4
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in torch_vae.state_dict().items()}, str(bare))
    _, bare_params = load_vae(bare, config=get_config("tiny_b"))
    inferred, _ = load_vae(bare, norm_num_groups=4)
    assert inferred.block_out_channels == (12, 24, 24) and inferred.layers_per_block == 2
    image = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (1, 8, 8, 3)), jnp.float32)
    a = module.apply({"params": params}, image)
    b = module.apply({"params": bare_params}, image)
    with torch.no_grad():
        ref = torch_vae(_nchw(image)).sample
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(a), _nhwc(ref), rtol=0, atol=1e-4)


def test_bad_files_give_one_line_errors(tmp_path):
    pickle_file = tmp_path / "vae.ckpt"
    pickle_file.write_bytes(b"\x80\x04not a safetensors file")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    for path, pattern in ((pickle_file, "not a .safetensors file or a diffusers folder"),
                          (garbage, "not a readable safetensors file"),
                          (empty_folder, "not a diffusers VAE folder"),
                          (tmp_path / "missing", "does not exist")):
        with pytest.raises(ValueError, match=pattern) as err:
            load_vae(path)
        assert "\n" not in str(err.value)


def test_mismatched_checkpoint_lists_keys_and_shapes(tmp_path):
    folder = tmp_path / "vae"
    _torch_vae("tiny_a").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["block_out_channels"] = [16, 48]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"\(87 mismatched, 0 missing, 0 unexpected\): shape mismatches: "
                                         r"decoder\.conv_in\.bias checkpoint \(32,\) vs model \(48,\); "
                                         r"decoder\.conv_in\.weight checkpoint \(32, 4, 3, 3\) vs model "
                                         r"\(48, 4, 3, 3\)") as err:
        load_vae(folder)
    assert "\n" not in str(err.value)
    state = _torch_vae("tiny_a").state_dict()
    del state["decoder.conv_out.bias"]
    state["encoder.extra.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"missing from checkpoint: decoder\.conv_out\.bias .*"
                                         r"not in the model: encoder\.extra\.weight \(3,\)"):
        convert_vae(state, get_config("tiny_a"))
    config["down_block_types"] = ["AttnDownEncoderBlock2D"] * 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unsupported VAE config: down_block_types"):
        load_vae(folder)


def test_deprecated_attention_names_load():
    """Checkpoints saved before diffusers renamed query/key/value/proj_attn (stored as 1x1 convs) still load."""
    torch_vae = _torch_vae("tiny_a")
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for key, value in torch_vae.state_dict().items():
        for new_name, old_name in renames.items():
            if ".attentions.0." in key and f".{new_name}." in key:
                key = key.replace(f".{new_name}.", f".{old_name}.")
                value = value[:, :, None, None] if value.ndim == 2 else value
        old[key] = value
    config = get_config("tiny_a")
    expected = convert_vae(torch_vae.state_dict(), config)
    converted = convert_vae(old, config)
    jax.tree.map(np.testing.assert_array_equal, converted, expected)


def test_bad_inputs():
    """Shape checks fire while tracing, so abstract evaluation is enough."""
    module = vae_from_config(get_config("tiny_b"))
    params = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3))))["params"]
    for shape, method, pattern in (((1, 10, 8, 3), "encode", "multiples of 4"),
                                   ((1, 8, 8, 4), "encode", r"\(B, H, W, 3\)"),
                                   ((1, 2, 2, 3), "decode", "latents")):
        with pytest.raises(ValueError, match=pattern):
            jax.eval_shape(functools.partial(module.apply, method=method), {"params": params},
                           jax.ShapeDtypeStruct(shape, jnp.float32))
