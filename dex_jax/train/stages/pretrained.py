"""Stage-1 pretrained initialisation from the user's files, and the check that a config has the files it needs.

Three files, each a config field (nothing is downloaded):
  pretrained.fan       the expression encoder's FAN trunk: face-alignment's 2DFAN-4 (its first stack is read)
  pretrained.convnext  the pose encoder's backbone: a timm `convnextv2_tiny` (its classifier head is ignored)
  lpips.vgg_weights    the VGG16 of the perceptual losses: torchvision's `vgg16` (its classifier is ignored)
each a `.safetensors` or a PyTorch state-dict file (`torch.load(weights_only=True)`), through the converters of
dex_jax/convert/. A config with `allow_random_init` False (the paper's) refuses to start without every file it
needs; True starts from random weights on purpose.
"""

from pathlib import Path

from dex_jax.convert.face_alignment_fan import load_fan
from dex_jax.convert.lpips_vgg import load_lpips
from dex_jax.convert.timm_convnext import load_convnext_v2
from dex_jax.train.stages.warm_start import placed, with_generator

# config field -> what it initialises, for the refusal
FILES = {
    "pretrained.fan": "the FAN trunk of the expression encoder (face-alignment's 2DFAN-4 file)",
    "pretrained.convnext": "the ConvNeXt-V2 backbone of the pose encoder (timm's convnextv2_tiny file)",
    "lpips.vgg_weights": "the VGG16 of the perceptual losses (torchvision's vgg16 file)",
}


def _field(config, name):
    section, key = name.split(".")
    return config[section][key] if section in config and key in config[section] else ""


def needed_files(config):
    """The fields of FILES this config reads a file from when it starts afresh: the FAN trunk and the ConvNeXt
    backbone unless a trained generator (init_from), expression encoder (init_expression_from) or pose encoder
    (init_pose_from) replaces them, the VGG16 while a perceptual weight is not 0."""
    needed = []
    if not config.get("init_from") and not config.get("init_expression_from"):
        needed.append("pretrained.fan")
    if not config.get("init_from") and not config.get("init_pose_from"):
        needed.append("pretrained.convnext")
    if config.loss.lpips or config.loss.component_lpips:
        needed.append("lpips.vgg_weights")
    return needed


def check_files(config):
    """One ValueError listing every file the config needs and lacks (empty field, or no such file), each with the
    override that sets it, unless allow_random_init; also when a given FAN file meets a trunk that is not the
    folded-BatchNorm one (model.expression.norm 'affine') its weights are made for."""
    fan = _field(config, "pretrained.fan")
    if fan and config.model.expression.get("norm", "affine") != "affine":
        raise ValueError(f"pretrained.fan {fan}: face-alignment's FAN has BatchNorms, which load into "
                         f"model.expression.norm='affine' only, not {config.model.expression.norm!r}")
    problems = []
    for name, what in FILES.items():
        path = _field(config, name)
        if path and not Path(path).is_file():
            problems.append(f"{name} {path} is not a file")
        elif not path and name in needed_files(config) and not config.get("allow_random_init", False):
            problems.append(f"{what}: --config.{name}=PATH")
    if problems:
        raise ValueError("this config starts from pretrained weights and lacks "
                         f"{len(problems)} file{'s' if len(problems) > 1 else ''}: " + "; ".join(problems)
                         + " (or --config.allow_random_init=True to start from random weights on purpose)")


def _named(name, path, load):
    """load() with a ValueError naming the config field and the file."""
    try:
        return load()
    except ValueError as err:
        text = str(err)
        raise ValueError(f"{name}: {text}" if str(path) in text else f"{name} {path}: {text}") from None


def lpips_from_file(config):
    """LPIPS params with the VGG16 of lpips.vgg_weights (and lpips.heads, default lpips' shipped v0.1 heads)."""
    path = config.lpips.vgg_weights
    return _named("lpips.vgg_weights", path, lambda: load_lpips(path, config.lpips.get("heads") or None))


def take_pretrained(state, config):
    """`state` with the generator's FAN trunk and ConvNeXt backbone (and their EMA) from the files the config
    names; `state` as it is when it names none. ValueError naming the field, the file and the first mismatched
    keys when a file does not fit this model."""
    generator = dict(state.params["generator"])
    model = config.model
    fan, convnext = _field(config, "pretrained.fan"), _field(config, "pretrained.convnext")
    if fan:
        params = _named("pretrained.fan", fan, lambda: load_fan(fan, model.expression.channels,
                                                               model.expression.hourglass_depth,
                                                               model.expression.num_landmarks))
        expression = dict(generator["expression"])
        expression["fan"] = placed("FAN trunk", params, expression["fan"], fan, "pretrained.fan")
        generator["expression"] = expression
    if convnext:
        params = _named("pretrained.convnext", convnext, lambda: load_convnext_v2(convnext, model.pose.depths))
        pose = dict(generator["pose"])
        pose["backbone"] = placed("ConvNeXt-V2 backbone", params, pose["backbone"], convnext, "pretrained.convnext")
        generator["pose"] = pose
    return with_generator(state, generator) if fan or convnext else state
