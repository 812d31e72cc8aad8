"""The animator's architecture (Stage 2): `paper` (two SD-1.5 UNets), `tiny` (trainable on a CPU), `test`.

`unet` is the plain backbone both UNets share (configs/unet_model.py fields; the animator adds the ray-map
input channels and the expression attention to the denoising UNet itself). Every transformer block's tokens
must form a volume of 2c/h channels x h/2 depth at the `unet.sample_size` latent (h even, 2c/h an integer):
the tiny sizes below are chosen so. `null_drops` is what the unconditional ("nothing") variant drops, any of
'reference' (reference tokens in self-attention and the warped-feature residual), 'ray_maps' (zeroed) and
'expression' (the learned "nothing" null latent); the default follows Animate Anyone (reference and image
context off, pose input kept), our choice as DeX does not say. `temporal` (the Stage-3 temporal module,
dex_jax/animator/temporal.py) is absent here, which means off: Stage-3 configs add it, so Stage-2 configs and
checkpoints stay as they are.
"""

from pathlib import Path

import ml_collections

from dex_jax.config_loading import load_config_file

UNET = Path(__file__).parent / "unet_model.py"


def _paper():
    # SD-1.5 at 512x512: 64x64 latents; 64x64x320 -> 10 x 32, 32x32x640 -> 40 x 16, 16x16x1280 -> 160 x 8,
    # 8x8x1280 -> 320 x 4 (channels x depth of the warped volumes); expression 512 -> 32 tokens x 16
    return dict(unet=load_config_file(UNET, "sd15"), expression_latent_dim=512, expression_tokens=32)


def _tiny():
    # 32x32 latents: 32x32x32 -> 2 x 16, 16x16x64 -> 8 x 8, 8x8x128 -> 32 x 4; the tiny Stage-1 expression
    # encoder's 128-d latent -> 32 tokens x 4
    unet = load_config_file(UNET, "tiny_a")
    unet.update(sample_size=32, block_out_channels=(32, 64, 128), layers_per_block=1, attention_head_dim=4,
                cross_attention_dim=64, norm_num_groups=8,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    return dict(unet=unet, expression_latent_dim=128, expression_tokens=32)


def _test():
    # 8x8 latents: 8x8x16 -> 4 x 4, 4x4x32 -> 16 x 2; expression 16 -> 8 tokens x 2
    unet = load_config_file(UNET, "tiny_a")
    unet.update(sample_size=8, block_out_channels=(16, 32), attention_head_dim=2, cross_attention_dim=8,
                norm_num_groups=4)
    return dict(unet=unet, expression_latent_dim=16, expression_tokens=8)


VARIANTS = {"paper": _paper, "tiny": _tiny, "test": _test}


def get_config(arg="paper"):
    config = ml_collections.ConfigDict(VARIANTS[arg]())
    config.context = "learned"  # a learned constant token sequence shared by both UNets (no CLIP tower is built)
    # more than one token: over a single key the softmax is 1, and attn2's to_q, to_k and norm2 would get no gradient
    config.context_length = 4
    config.null_drops = ("reference", "expression")
    config.reference_attention = True  # False: the reference reaches the denoiser only as warped residuals
    return config
