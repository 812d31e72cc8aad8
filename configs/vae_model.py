"""AutoencoderKL architectures: `sd15` (diffusers' SD-1.5 VAE) and two tiny test configs `tiny_a`, `tiny_b`."""

import ml_collections


def _sd15():
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, norm_num_groups=32, scaling_factor=0.18215)


def _tiny_a():
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                layers_per_block=1, norm_num_groups=8, scaling_factor=0.18215)


def _tiny_b():
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(12, 24, 24),
                layers_per_block=2, norm_num_groups=4, scaling_factor=0.18215)


VARIANTS = {"sd15": _sd15, "tiny_a": _tiny_a, "tiny_b": _tiny_b}


def get_config(arg="sd15"):
    config = ml_collections.ConfigDict(VARIANTS[arg]())
    config.use_quant_conv = True
    config.use_post_quant_conv = True
    config.mid_block_add_attention = True
    config.attention_implementation = ml_collections.config_dict.placeholder(str)
    config.dtype = "float32"
    return config
