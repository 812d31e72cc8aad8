"""An animator conditions on frozen Stage-1 encoders: its expression crops must be the ones they were trained on."""

import json

import pytest

from dex_jax.config_loading import load_config
from dex_jax.train.animator_checkpoint import read_frozen
from motion_checkpoint import write_untrained_run


def test_motion_from_trained_on_other_expression_crops_is_refused_naming_the_field(tmp_path):
    run = write_untrained_run(tmp_path / "stage1")
    config = load_config("configs/animator_test.py")
    config.motion_from = str(run)
    read_frozen(config)  # both the defaults: box crops at scale 1
    stage1 = json.loads((run / "config.json").read_text())
    stage1["data"]["expression_align"] = "landmarks"
    del stage1["data"]["expression_box_scale"]  # a Stage-1 config older than a field reads as its default
    (run / "config.json").write_text(json.dumps(stage1))
    with pytest.raises(ValueError, match=f"^motion_from {run}: its expression encoder was trained on crops with "
                                         "data.expression_align='landmarks', this config has 'box'; set "
                                         "--config.data.expression_align=landmarks$"):
        read_frozen(config)
    config.data.expression_align = "landmarks"
    read_frozen(config)
    config.data.expression_box_scale = 1.2
    with pytest.raises(ValueError, match="data.expression_box_scale=1.0, this config has 1.2"):
        read_frozen(config)
