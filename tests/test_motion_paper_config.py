"""configs/motion_paper.py pinned against the paper: every number it takes from the main text (Sec. 3.2, 4.1) and
the supplement (A.1, B.1, B.2), each beside the sentence it comes from; the batch printed as sources x drivers."""

import logging
import re
from pathlib import Path

import pytest

from dex_jax.config_loading import load_config
from dex_jax.train.stages import stage1

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
PAPER, SUPPLEMENT = "001_63fd40129f558de1.txt", "dex_portrait_supplement.txt"
# (file, sentence as printed there, whitespace aside), each pinned by a test below
QUOTES = {
    "schedule": (PAPER, ("Motion Training. This stage is trained to obtain precise and disentangled expression and "
                         "pose encoders, with a batch size of 112 and a learning rate of $1 \\times 10^{-4}$ for 200k "
                         "iterations.")),
    "drivers": (SUPPLEMENT, "within each training batch, one source frame is paired with four driving frames"),
    "weights": (SUPPLEMENT, "where λr = 10, λlpips = 1, λclpips = 100."),
    "loss": (SUPPLEMENT, "Ltotal = λr L1 + λlpipsLlpips + λclpipsLclpips + Ladv"),
    "resolution": (SUPPLEMENT, "ultimately decoded into a 256- resolution image"),
    "crop": (PAPER, "resize it to a fixed size of $224 \\times 224$"),
    "latents": (SUPPLEMENT, ("flattened into a 1D 2048-dimensional ap- pearance latent code, which is concatenated "
                             "with a 1D 512- dimensional expression latent code")),
    "volumes": (SUPPLEMENT, "(both with spatial sizes 16 × 64 × 64)"),
    "fusion": (SUPPLEMENT, ("compresses the spatial sizes to 16 × 32 × 32 while reducing the channel count from 64 "
                            "to 32")),
    "to_rgb": (SUPPLEMENT, ("gradually reduce the channel count from 96 to 3 during the upsampling process from 8 × 8 "
                            "to 256 × 256")),
    "pose": (PAPER, "with 6 ( $3 + 2 + 1$ ) degrees of freedom"),
}


def squeeze(text):
    return re.sub(r"\s+", " ", text)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the paper's text lives beside the checkout, in shared/reference")
def test_the_quotes_are_the_paper_s_words():
    texts = {name: squeeze((REFERENCE / name).read_text()) for name in (PAPER, SUPPLEMENT)}
    for key, (name, quote) in QUOTES.items():
        assert squeeze(quote) in texts[name], key


def test_paper_config_takes_the_paper_s_numbers():
    config = load_config("configs/motion_paper.py")
    model = config.model
    # "schedule", "drivers": 112 read as sources, each with its four driving frames (the config says why)
    assert (config.data.batch_size, config.data.num_driving) == (112, 4)
    assert config.optimizer.lr == 1e-4 and config.total_steps == 200_000
    # "weights", "loss": the adversarial term is unweighted
    assert (config.loss.l1, config.loss.lpips, config.loss.component_lpips, config.loss.adversarial) == (10, 1, 100, 1)
    assert config.lpips.distance == "lpips"
    # "resolution", "crop"
    assert config.data.image_size == model.image_size == 256
    assert config.data.expression_size == model.expression.image_size == 224
    # "latents": the appearance latent is the 5-layer CNN's output flattened, 2 x 2 x 512
    assert model.appearance_latent.flatten and len(model.appearance_latent.channels) == 5
    assert model.appearance_latent.latent_dim == 2048 == 4 * model.appearance_latent.channels[-1]
    assert model.expression.latent_dim == 512
    # "volumes", "fusion": 32 ch x 16 x 64 x 64 from a 256 image (two 2x downsamplings), 64 -> 32 channels
    assert model.appearance.volume_channels * 2 == 64 and model.fusion.out_channels == 32
    assert model.appearance.volume_depth == 16 and len(model.appearance.block_channels) - 1 == 2
    # "to_rgb": 8x8 (32 / 2^2) to 256 (32 * 2^3), toRGB* from 96 channels to 3
    assert (model.decoder.num_down, len(model.decoder.up_channels)) == (2, 3)
    assert model.decoder.skip_channels[0] == 96 and model.decoder.skip_channels[-1] == 3
    # "pose" is the encoder's 6 outputs (test_pose_encoder.py); the trunks are those of the pretrained files
    assert (tuple(model.pose.depths), tuple(model.pose.dims)) == ((3, 3, 9, 3), (96, 192, 384, 768))
    assert (model.expression.channels, model.expression.hourglass_depth, model.expression.num_landmarks,
            model.expression.norm) == (256, 4, 68, "affine")
    assert not config.allow_random_init


def test_stage_prints_the_batch_as_sources_times_driving_frames(caplog):
    config = load_config("configs/motion_test.py")
    config.data.update(batch_size=6, num_driving=3)
    with caplog.at_level(logging.INFO, logger="dex_jax"):
        stage1.make_stage(config, lpips={})
    assert "batch: 6 sources x 3 driving frames each = 18 source-driving pairs per step" in caplog.text


def test_unknown_perceptual_distance_is_refused():
    config = load_config("configs/motion_test.py")
    config.lpips.distance = "vgg19"
    with pytest.raises(ValueError, match="unknown lpips.distance 'vgg19': use one of lpips, vgg"):
        stage1.make_stage(config, lpips={})
