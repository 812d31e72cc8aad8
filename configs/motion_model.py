"""Stage-1 motion-trainer architecture: `paper` (DeX-Portrait sizes), `tiny` (trainable on CPU), `test`."""

import ml_collections


def _paper():
    return dict(
        image_size=256,
        appearance=dict(  # 2D CNN -> 512 ch at 64x64 -> 32 ch x 16 x 64 x 64 volume -> 3D resblocks
            block_channels=(64, 128, 256), feature_channels=512, volume_channels=32,
            volume_depth=16, num_resblocks=6, norm_groups=32),
        pose=dict(  # ConvNeXt-V2 tiny with GRN -> yaw, pitch, roll, tx, ty, scale
            depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
        expression=dict(  # FAN trunk (conv7 s2, conv blocks, one 4-level hourglass, 256 ch) -> 512-d
            image_size=224, channels=256, hourglass_depth=4, num_landmarks=68, latent_dim=512,
            norm="affine",  # the pretrained FAN's frozen BatchNorms, folded at import
            pool_grid=0),  # the head's pool (ours, the paper names only the FAN): 0 = global mean, n = n x n grid
        fusion=dict(out_channels=32, norm_groups=8),  # ResBlock3D 64 -> 32 ch, 16x64x64 -> 16x32x32, flatten
        # A.1: "processed through a 5-layer CNN, then flattened into a 1D 2048-dimensional appearance latent code":
        # 64x64 -> five stride-2 convs -> 2x2x512, flattened (the tiny and test models pool and project, ours)
        appearance_latent=dict(channels=(256, 512, 512, 512, 512), latent_dim=2048, flatten=True),
        decoder=dict(  # Fig. S1a: enters at 32x32x512, down to 8x8, up to 256x256x128, toRGB* 96 -> 3
            channels=512, num_down=2, up_channels=(512, 256, 128), skip_channels=(96, 48, 24, 12, 6, 3)),
        discriminator=dict(channels=(128, 256, 512, 512, 512, 512, 512), mbstd_group=4),
    )


def _tiny():
    return dict(
        image_size=64,
        appearance=dict(block_channels=(16, 64), feature_channels=128, volume_channels=16,  # volume at S/2
                        volume_depth=8, num_resblocks=2, norm_groups=8),
        pose=dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128)),
        expression=dict(image_size=64, channels=64, hourglass_depth=2, num_landmarks=68, latent_dim=128,
                        norm="group",  # trained from scratch: without normalisation the FAN learns nothing
                        pool_grid=0),
        fusion=dict(out_channels=16, norm_groups=8),
        appearance_latent=dict(channels=(64, 128, 128, 128, 128), latent_dim=256),
        decoder=dict(channels=128, num_down=1, up_channels=(64, 32), skip_channels=(24, 16, 8, 3)),  # enters at S/4
        discriminator=dict(channels=(32, 64, 128, 128, 128), mbstd_group=4),
    )


def _test():
    return dict(
        image_size=32,
        appearance=dict(block_channels=(4, 8, 8), feature_channels=16, volume_channels=4,
                        volume_depth=4, num_resblocks=1, norm_groups=2),
        pose=dict(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16)),
        expression=dict(image_size=32, channels=16, hourglass_depth=1, num_landmarks=4, latent_dim=16, norm="group",
                        pool_grid=0),
        fusion=dict(out_channels=4, norm_groups=2),
        appearance_latent=dict(channels=(8, 8, 8, 8, 8), latent_dim=16),
        decoder=dict(channels=16, num_down=1, up_channels=(16, 8, 8), skip_channels=(8, 8, 4, 4, 3)),
        discriminator=dict(channels=(8, 16, 16, 16), mbstd_group=2),
    )


VARIANTS = {"paper": _paper, "tiny": _tiny, "test": _test}


def get_config(arg="paper"):
    config = ml_collections.ConfigDict(VARIANTS[arg]())
    config.dtype = "float32"
    return config
