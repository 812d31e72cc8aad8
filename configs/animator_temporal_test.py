"""Stage-3 training for tests: the `test` animator with a temporal module over random batches of 2 clips of 3 frames.

`init_from` (a Stage-2 `test` animator export or workdir) and `motion_from` are left empty: a test names them
(tests/animator_checkpoint.py writes an untrained export, whose config's motion_from is its Stage-1 run). The rest
is configs/animator_temporal_paper.py's on configs/animator_test.py's sizes.
"""

from pathlib import Path

from dex_jax.config_loading import load_config_file

HERE = Path(__file__).parent


def get_config():
    config = load_config_file(HERE / "animator_test.py")
    config.stage = "temporal"
    config.init_from = ""
    config.model.temporal = dict(enabled=True, heads=2, attention_layers=2)
    config.data.kind = "clips"
    config.data.clip_length = 3
    config.data.batch_size = 2
    return config
