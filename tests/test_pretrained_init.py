"""Stage-1 pretrained initialisation: the paper config refuses to start without its files (one error naming each
with its override), allow_random_init starts without them, files saved by the PyTorch originals (random weights)
start a run, and files that do not fit are one-line errors naming the field, the file and the first bad key."""

import re
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import timm
import torch
import torchvision
from face_alignment.models import FAN as TorchFAN

from dex_jax.config_loading import load_config
from dex_jax.convert.face_alignment_fan import convert_fan
from dex_jax.convert.lpips_vgg import convert_vgg16_features
from dex_jax.convert.timm_convnext import convert_convnext_v2
from dex_jax.motion.convnext_v2 import ConvNeXtV2
from dex_jax.train.stages import stage1

POSE_DEPTHS, POSE_DIMS = (1, 1, 1, 1), (8, 8, 16, 16)
FIELDS = ("pretrained.fan", "pretrained.convnext", "lpips.vgg_weights")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{field: path} of files saved by face-alignment (a 4-stack FAN, i.e. 2DFAN-4's layout), timm (a ConvNeXt-V2
    of the test pose encoder's sizes) and torchvision (vgg16's `features.*` keys; its classifier, which the
    import ignores, left out to keep the file small), all on random weights, and their state dicts."""
    folder = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    fan = TorchFAN(num_modules=4).eval()
    convnext = timm.create_model("convnextv2_atto", pretrained=False, depths=POSE_DEPTHS, dims=POSE_DIMS).eval()
    with torch.no_grad():
        for p in convnext.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vgg = {f"features.{k}": v for k, v in torchvision.models.vgg16(weights=None).features.state_dict().items()}
    state_dicts = {"pretrained.fan": fan.state_dict(), "pretrained.convnext": convnext.state_dict(),
                   "lpips.vgg_weights": vgg}
    paths = {}
    for field, state_dict in state_dicts.items():
        paths[field] = folder / f"{field.split('.')[1]}.pth"
        torch.save(state_dict, paths[field])
    return paths, state_dicts, convnext


def small_paper_config(**fields):
    """configs/motion_paper.py with the `test` model, except the paper's FAN trunk (what face-alignment's files
    hold) at a 64 px crop, on random batches; `fields` set as overrides do."""
    config = load_config("configs/motion_paper.py")
    config.model = load_config("configs/motion_model.py:test")
    config.model.expression.update(channels=256, hourglass_depth=4, num_landmarks=68, norm="affine", image_size=64)
    config.model.pose.update(depths=POSE_DEPTHS, dims=POSE_DIMS)
    config.data.update(source="random", batch_size=2, num_driving=1, image_size=32, expression_size=64)
    config.update_from_flattened_dict(fields)
    return config


def test_paper_config_refuses_to_start_without_its_files_naming_each_override(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dex_jax.cli", "train", "--config", "configs/motion_paper.py",
                             "--workdir", str(tmp_path / "run")], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "lacks 3 files" in result.stderr
    for field in FIELDS:
        assert f"--config.{field}=PATH" in result.stderr
    assert "--config.allow_random_init=True" in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_refusal_names_files_that_are_not_there_and_only_the_files_the_config_needs(tmp_path):
    config = small_paper_config(**{"pretrained.fan": str(tmp_path / "nope.pth")})
    with pytest.raises(ValueError, match=r"lacks 3 files: pretrained.fan \S+nope.pth is not a file; the ConvNeXt"):
        stage1.check_config(config)
    no_lpips = {"loss.lpips": 0.0, "loss.component_lpips": 0.0}
    with pytest.raises(ValueError, match=r"lacks 1 file: the ConvNeXt-V2 backbone .*convnext=PATH \(or"):
        stage1.check_config(small_paper_config(**no_lpips, init_expression_from="RUN"))  # replaces the FAN only
    with pytest.raises(ValueError, match=r"lacks 1 file: the FAN trunk .*fan=PATH \(or"):
        stage1.check_config(small_paper_config(**no_lpips, init_pose_from="RUN"))  # replaces the ConvNeXt only
    stage1.check_config(small_paper_config(**no_lpips, init_expression_from="RUN", init_pose_from="RUN"))
    stage1.check_config(small_paper_config(**no_lpips, init_from="RUN"))  # a trained generator replaces both
    stage1.check_config(small_paper_config(allow_random_init=True))
    with pytest.raises(ValueError, match="load into model.expression.norm='affine' only, not 'group'"):
        stage1.check_config(small_paper_config(**{"pretrained.fan": __file__, "model.expression.norm": "group"}))


def test_files_of_the_pytorch_originals_start_the_run(files):
    paths, state_dicts, convnext = files
    config = small_paper_config(**{field: str(path) for field, path in paths.items()})
    stage1.check_config(config)
    stage = stage1.make_stage(config)
    state = stage.warm_start(nn.unbox(jax.jit(stage.init)(jax.random.PRNGKey(0))))
    generator = state.params["generator"]
    want = {"expression/fan": convert_fan(state_dicts["pretrained.fan"]),
            "pose/backbone": convert_convnext_v2(state_dicts["pretrained.convnext"], POSE_DEPTHS)}
    for where, tree in want.items():
        module, sub = where.split("/")
        for params in (generator, state.ema["generator"]):
            for got, expected in zip(jax.tree.leaves(params[module][sub]), jax.tree.leaves(tree), strict=True):
                np.testing.assert_array_equal(got, expected, err_msg=where)
    vgg = convert_vgg16_features(state_dicts["lpips.vgg_weights"])
    for got, expected in zip(jax.tree.leaves(stage.frozen["lpips"]["vgg"]), jax.tree.leaves(vgg), strict=True):
        np.testing.assert_array_equal(got, expected)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    ours = ConvNeXtV2(POSE_DEPTHS, POSE_DIMS).apply({"params": generator["pose"]["backbone"]}, x)
    with torch.no_grad():
        theirs = convnext.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def one_line_error(config, call):
    with pytest.raises(ValueError) as refused:
        call(config)
    message = str(refused.value)
    assert "\n" not in message, message
    return message


def start(config):
    stage = stage1.make_stage(config)
    return stage.warm_start(nn.unbox(jax.eval_shape(stage.init, jax.random.PRNGKey(0))))


def test_a_file_of_another_network_names_the_field_the_file_and_the_first_key_it_lacks(files):
    paths = files[0]
    config = small_paper_config(**{"pretrained.fan": str(paths["pretrained.convnext"]), "allow_random_init": True,
                                   "loss.lpips": 0.0, "loss.component_lpips": 0.0})
    message = one_line_error(config, start)
    assert message.startswith(f"pretrained.fan {paths['pretrained.convnext']}: FAN checkpoint does not match")
    assert "missing from checkpoint: bn1.weight (64,)" in message
    config = small_paper_config(**{"lpips.vgg_weights": str(paths["pretrained.fan"]), "allow_random_init": True})
    message = one_line_error(config, stage1.make_stage)
    assert message.startswith(f"lpips.vgg_weights {paths['pretrained.fan']}: VGG16 checkpoint does not match")
    assert "missing from checkpoint: features.0.weight (64, 3, 3, 3)" in message


def test_a_file_of_other_sizes_names_the_first_mismatched_param(files, tmp_path):
    torch.manual_seed(1)
    wider = timm.create_model("convnextv2_atto", pretrained=False, depths=POSE_DEPTHS, dims=(8, 16, 16, 16))
    path = tmp_path / "wider.pth"
    torch.save(wider.state_dict(), path)
    config = small_paper_config(**{"pretrained.convnext": str(path), "allow_random_init": True,
                                   "loss.lpips": 0.0, "loss.component_lpips": 0.0})
    message = one_line_error(config, start)
    assert message.startswith(f"pretrained.convnext {path}: its ConvNeXt-V2 backbone does not fit this config")
    assert re.search(r"stages_1/\S+: \(\d+(, \d+)*\) there, \(\d+(, \d+)*\) here", message), message


def test_truncated_files_and_pickles_of_more_than_weights_are_refused(files, tmp_path):
    data = files[0]["pretrained.convnext"].read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[:len(data) // 2])
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": files[2]}, pickled)
    for path, reason in ((truncated, "the file ends early"),
                         (pickled, "it pickles timm.models.convnext.ConvNeXt, more than weights")):
        config = small_paper_config(**{"pretrained.convnext": str(path), "allow_random_init": True,
                                       "loss.lpips": 0.0, "loss.component_lpips": 0.0})
        message = one_line_error(config, start)
        assert message.startswith(f"pretrained.convnext: {path} is not a readable PyTorch weights file ({reason}")
