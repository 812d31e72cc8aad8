"""`dex-portrait evaluate`: an untrained checkpoint on SynthHeads, scoring a predictions folder, one-line errors,
an existing report folder refused unless --overwrite and kept when the new run fails."""

import json

import cv2
import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from dex_jax import cli
from dex_jax.convert.lpips_vgg import vgg16_conv_indices
from dex_jax.motion.lpips import lpips_param_shapes
from motion_checkpoint import write_untrained_run

HEADER = ("| Method | PSNR ↑ | SSIM ↑ | L1 ↓ | LPIPS ↓ | Expr. transfer ↑ | Flicker ↓ | CSIM ↑ (dlib_resnet_v1) "
          "| AED ↓ | APD ↓ |")


@pytest.fixture(autouse=True)
def same_compilation_cache(monkeypatch):
    monkeypatch.setenv("DEX_JAX_CACHE", jax.config.jax_compilation_cache_dir)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return write_untrained_run(tmp_path_factory.mktemp("run"))


def evaluate(capsys, *args):
    code = cli.main(["evaluate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def last_line_error(err):
    """The error `dex-portrait` printed: one line, the last on stderr (after any progress bar)."""
    line = err.rstrip("\n").split("\n")[-1]
    assert line.startswith("dex-portrait evaluate: error: "), err
    return line


def random_vgg16_file(path):
    """A torchvision-layout VGG16 `features` state dict with random weights, as safetensors."""
    rng, shapes = np.random.default_rng(0), lpips_param_shapes()["vgg"]
    state = {}
    for index, name in vgg16_conv_indices().items():
        h, w, i, o = shapes[name]["kernel"].shape
        state[f"features.{index}.weight"] = rng.normal(0.0, np.sqrt(2.0 / (h * w * i)), (o, i, h, w)).astype(np.float32)
        state[f"features.{index}.bias"] = np.zeros(o, np.float32)
    save_file(state, str(path))
    return path


def write_frames(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


def test_untrained_checkpoint_on_synth_heads_writes_table_and_json(workdir, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, _ = evaluate(capsys, "--checkpoint", workdir, "--benchmark", "synth_heads", "--protocol", "self",
                               "--num-clips", 2, "--num-frames", 4, "--size", 64, "--out", out)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    table = (out / "report.md").read_text()
    assert HEADER in table and table in stdout
    assert f"| {workdir.name} step 0 (EMA generator), untrained | " in table
    summary = json.loads((out / "report.json").read_text())
    assert summary["protocol"] == "self-reenactment" and summary["csim_embedder"] == "dlib_resnet_v1"
    assert summary["videos"] == 2 and summary["frames"] == 6
    assert summary["metrics"]["psnr"]["count"] == 6 and np.isfinite(summary["metrics"]["psnr"]["mean"])
    assert 0.0 < summary["metrics"]["ssim"]["mean"] < 1.0
    assert "lpips" not in summary["metrics"] and any("LPIPS not measured" in n for n in summary["notes"])
    transfer = summary["metrics"]["expression_transfer"]
    assert transfer["count"] + transfer["unchanged"] == 6 and -1.0 <= transfer["mean"] <= 1.0
    for name in ("csim", "aed", "apd"):
        figures = summary["metrics"][name]
        assert figures["count"] + figures["no_face"] == 6
        assert sum(v["metrics"][name]["no_face"] for v in summary["per_video"]) == figures["no_face"]


def test_predictions_folder_is_scored_and_mismatches_are_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clips = {"a": rng.integers(0, 256, (4, 48, 48, 3), np.uint8), "sub+b": rng.integers(0, 256, (4, 48, 48, 3),
                                                                                         np.uint8)}
    write_frames(tmp_path / "gt" / "a", clips["a"])
    write_frames(tmp_path / "gt" / "sub" / "b", clips["sub+b"])
    for name, frames in clips.items():
        write_frames(tmp_path / "pred" / name, frames[1:])
    args = ["--predictions", tmp_path / "pred", "--benchmark", f"folder:{tmp_path / 'gt'}", "--out", tmp_path / "r"]
    code, _, _ = evaluate(capsys, *args, "--lpips-vgg", random_vgg16_file(tmp_path / "vgg16.safetensors"))
    assert code == 0
    summary = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [v["name"] for v in summary["per_video"]] == ["a", "sub+b"]
    metrics = summary["metrics"]
    assert metrics["psnr"]["mean"] == pytest.approx(100.0) and metrics["psnr"]["count"] == 6
    assert metrics["ssim"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["lpips"]["count"] == 6 and metrics["lpips"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert any(note.startswith("LPIPS: VGG16 trunk from") for note in summary["notes"])
    report = {name: (tmp_path / "r" / name).read_bytes() for name in ("report.json", "report.md")}

    code, _, err = evaluate(capsys, *args)
    assert code == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'r'} already exists; pass --overwrite to replace it" in last_line_error(err)
    args.append("--overwrite")  # from here on the runs fail or replace the report
    (tmp_path / "pred" / "a" / "0002.png").unlink()
    code, _, err = evaluate(capsys, *args)
    assert code == 2
    assert "a: prediction has 2 frames of 48x48x3, ground truth has 3 frames of 48x48x3" in last_line_error(err)
    write_frames(tmp_path / "pred" / "a", clips["a"][1:, :32, :32])
    code, _, err = evaluate(capsys, *args)
    assert code == 2 and "3 frames of 32x32x3, ground truth has 3 frames of 48x48x3" in last_line_error(err)
    write_frames(tmp_path / "pred" / "a", clips["a"][1:])
    (tmp_path / "pred" / "sub+b.mp4").touch()
    for frame in (tmp_path / "pred" / "sub+b").iterdir():
        frame.unlink()
    (tmp_path / "pred" / "sub+b").rmdir()
    code, _, err = evaluate(capsys, *args)
    assert code == 2 and "sub+b.mp4 cannot be opened as a video" in last_line_error(err)
    assert {name: (tmp_path / "r" / name).read_bytes() for name in report} == report  # failed runs kept it
    (tmp_path / "pred" / "sub+b.mp4").unlink()
    write_frames(tmp_path / "pred" / "sub+b", clips["sub+b"][1:])
    code, _, err = evaluate(capsys, *args)
    assert code == 0, err
    assert "lpips" not in json.loads((tmp_path / "r" / "report.json").read_text())["metrics"]  # replaced: no VGG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt", "pred", "r", "vgg16.safetensors"]


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "{tmp}/nowhere"], "checkpoint not found"),
    (["--checkpoint", "{tmp}", "--benchmark", "celebv"], "unknown benchmark 'celebv'"),
    (["--checkpoint", "{tmp}", "--protocol", "mirror"], "argument --protocol: invalid choice: 'mirror'"),
    (["--benchmark", "synth_heads"], "one of the arguments --checkpoint --predictions is required"),
    (["--predictions", "{tmp}/nowhere"], "predictions folder not found"),
])
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, args, message):
    code, _, err = evaluate(capsys, *[a.format(tmp=tmp_path) for a in args], "--out", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("dex-portrait evaluate: error: ") and message in err
