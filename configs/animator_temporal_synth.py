"""Stage-3 training of the bundled SynthHeads animator on a CPU: its temporal module alone, on 24-frame clips.

    dex-portrait train --config animator_temporal_synth --workdir runs/animator_temporal_synth

Starts from the bundled Stage-2 animator data/animator_synth (found beside this file, whatever the working
directory; every non-temporal param frozen) with the frozen encoders it keeps (animator_synth's motion_from), on
synth_heads/cpu128 (32 consecutive frames per camera: 6480 runs of 24 in its train split). Clips of 24 frames as in
the paper (the windows of long-clip sampling are 24 frames too); the rest is animator_synth's (configs/
animator_synth.py) with the temporal module's sizes, batch, rate and steps ours, for this CPU: 4 heads (the tiny
UNet's widths 32, 64, 128 divide by 4), 1 clip per step (24 denoised frames, as many as 3 Stage-2 synth steps).
"""

from pathlib import Path

from dex_jax.config_loading import load_config_file

HERE = Path(__file__).parent


def get_config():
    config = load_config_file(HERE / "animator_synth.py")
    config.stage = "temporal"
    config.total_steps = 2_000
    config.init_from = str(HERE.parent / "data" / "animator_synth")
    config.model.temporal = dict(enabled=True, heads=4, attention_layers=2)
    config.data.kind = "clips"
    config.data.clip_length = 24  # paper
    config.data.batch_size = 1
    config.optimizer.update(lr=1e-4, schedule="constant", warmup_steps=100, final_lr_fraction=1.0)
    return config
