"""Stage-3 training as in the paper: only the temporal module trains, on 24-frame clips, batch 8, lr 1e-5, 80k steps.

Run, with STAGE2 = the Stage-2 animator (`dex-portrait export` of an animator_paper run, or its workdir), STAGE1 and
SD15 the motion_from and vae_from that Stage 2 used:
    dex-portrait train --config animator_temporal_paper --workdir DIR --config.data.dataset_dir=DATASET \\
        --config.init_from=STAGE2 --config.motion_from=STAGE1 --config.latent.vae_from=SD15

The paper (Sec. 4.1, "3. Temporal Training"): "Only the temporal module is trained using 24-frame video sequences,
with a batch size of 8 and a learning rate of 1 x 10^-5 for 80k iterations." Supplement B.2: "each batch consists
of one source frame and 24 consecutive driving frames". Those numbers are marked "paper"; the rest is Stage 2's
(configs/animator_paper.py) or ours, marked "ours". Reading of "batch 8": 8 clips, each one source and 24 driving
frames (192 denoised frames per step, as Stage 2's 48 x 4).
"""

from pathlib import Path

from dex_jax.config_loading import load_config_file

HERE = Path(__file__).parent


def get_config():
    config = load_config_file(HERE / "animator_paper.py")
    config.stage = "temporal"
    config.total_steps = 80_000  # paper
    # The Stage-2 animator (export or workdir) whose every non-temporal param this run starts from and keeps frozen.
    config.init_from = ""
    # ours: AnimateDiff's motion-module shape (8 heads, two temporal self-attentions per module); the paper does not
    # describe the module beyond "temporal attention"
    config.model.temporal = dict(enabled=True, heads=8, attention_layers=2)

    config.data.kind = "clips"  # paper: consecutive frames of one video
    config.data.clip_length = 24  # paper
    config.data.batch_size = 8  # paper (8 clips)
    config.optimizer.lr = 1e-5  # paper
    config.checkpoint.every_steps = 2000  # ours
    return config
