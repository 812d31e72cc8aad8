"""`dex-portrait convert diffusers`: tiny diffusers UNet and VAE folders -> orbax checkpoint -> the same models."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from diffusers import UNet2DConditionModel as TorchUNet

from configs.unet_model import get_config as unet_config
from configs.vae_model import get_config as vae_config
from dex_jax.convert.diffusers import convert_to_orbax, load_converted, load_unet, load_vae, main, module_config

UNET_KEYS = ("sample_size", "in_channels", "out_channels", "block_out_channels", "layers_per_block",
             "attention_head_dim", "cross_attention_dim", "norm_num_groups", "norm_eps", "use_linear_projection",
             "flip_sin_to_cos", "freq_shift", "down_block_types", "up_block_types")


@pytest.fixture(scope="module")
def diffusers_folders(tmp_path_factory):
    """A tiny SD-style pipeline folder (unet/ and vae/) written by diffusers' save_pretrained."""
    root = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(0)
    unet = TorchUNet(**{key: unet_config("tiny_a")[key] for key in UNET_KEYS})
    c = vae_config("tiny_a")
    vae = TorchAutoencoderKL(block_out_channels=tuple(c.block_out_channels), layers_per_block=c.layers_per_block,
                             norm_num_groups=c.norm_num_groups, latent_channels=c.latent_channels,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    with torch.no_grad():
        for p in list(unet.parameters()) + list(vae.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    return root


def _assert_same(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_convert_writes_a_checkpoint_that_loads_back(diffusers_folders, tmp_path):
    out = tmp_path / "converted"
    assert main(["--unet", str(diffusers_folders / "unet"), "--vae", str(diffusers_folders), "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]  # no staging folder left behind
    restored = load_converted(out)
    for name, load in (("unet", load_unet), ("vae", load_vae)):
        module, params = load(diffusers_folders / name)
        restored_module, restored_params = restored[name]
        assert module_config(restored_module) == module_config(module)
        _assert_same(restored_params, params)
    assert restored["vae"][0].norm_num_groups == 8 and restored["unet"][0].cross_attention_dim == 24


def test_convert_vae_only_and_refuses_existing_output(diffusers_folders, tmp_path):
    out = convert_to_orbax(None, diffusers_folders / "vae", tmp_path / "vae_only")
    assert set(load_converted(out)) == {"vae"}
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        convert_to_orbax(None, diffusers_folders / "vae", out)
    assert main(["--unet", str(diffusers_folders / "unet"), "--out", str(out), "--overwrite"]) == 0
    assert set(load_converted(out)) == {"unet"} and sorted(p.name for p in tmp_path.iterdir()) == ["vae_only"]
    with pytest.raises(ValueError, match="nothing to convert"):
        convert_to_orbax(None, None, tmp_path / "none")


def test_failed_write_leaves_nothing(diffusers_folders, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ocp.PyTreeCheckpointer, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        convert_to_orbax(None, diffusers_folders / "vae", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_bad_paths_give_one_line_errors(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="not a .safetensors file or a diffusers folder"):
        main(["--vae", str(weights), "--out", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="not a converted checkpoint"):
        load_converted(tmp_path)
