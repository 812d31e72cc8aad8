"""SD-1.x UNet architectures: `sd15` (diffusers' SD-1.5 UNet) and two tiny test configs `tiny_a`, `tiny_b`."""

import ml_collections


def _sd15():
    return dict(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2, attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32,
        norm_eps=1e-5, use_linear_projection=False, flip_sin_to_cos=True, freq_shift=0,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def _tiny_a():
    return dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, attention_head_dim=2, cross_attention_dim=24, norm_num_groups=8,
        norm_eps=1e-5, use_linear_projection=False, flip_sin_to_cos=True, freq_shift=0,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


def _tiny_b():
    return dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(24, 48),
        layers_per_block=2, attention_head_dim=(3, 4), cross_attention_dim=40, norm_num_groups=6,
        norm_eps=1e-6, use_linear_projection=True, flip_sin_to_cos=False, freq_shift=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


VARIANTS = {"sd15": _sd15, "tiny_a": _tiny_a, "tiny_b": _tiny_b}


def get_config(arg="sd15"):
    config = ml_collections.ConfigDict(VARIANTS[arg]())
    config.extra_in_channels = 0
    config.expression_dim = ml_collections.config_dict.placeholder(int)
    config.attention_implementation = ml_collections.config_dict.placeholder(str)
    config.dtype = "float32"
    return config
