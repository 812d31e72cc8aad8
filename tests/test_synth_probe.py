"""`dex-portrait probe`: ridge probe and affine calibration properties, a run on an untrained checkpoint, its
output folder refused unless --overwrite, and its help with every setting as a value."""

import json

import jax
import numpy as np
import pytest

from dex_jax import cli
from dex_jax.evaluate.synth_probe import affine_calibration, pose_errors, ridge_probe_r2
from motion_checkpoint import write_untrained_run


@pytest.fixture(autouse=True)
def same_compilation_cache(monkeypatch):
    monkeypatch.setenv("DEX_JAX_CACHE", jax.config.jax_compilation_cache_dir)


def test_ridge_probe_finds_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 20))
    signal = x[:, :3] @ np.array([[1.0], [-2.0], [0.5]])
    y = np.concatenate([signal, rng.normal(size=(600, 1))], 1)
    r2 = ridge_probe_r2(x[:400], y[:400], x[400:], y[400:])
    assert r2[0] > 0.99 and r2[1] < 0.1


def test_affine_calibration_and_pose_errors_in_degrees():
    rng = np.random.default_rng(1)
    truth = rng.uniform(-0.5, 0.5, size=(50, 6))
    predicted = -2.0 * truth + 0.3
    np.testing.assert_allclose(affine_calibration(predicted, truth)(predicted), truth, atol=1e-9)
    errors = pose_errors(truth + np.array([np.pi / 180, 0, 0, 0.01, 0, 0]), truth)
    assert errors["yaw"] == pytest.approx(1.0) and errors["tx"] == pytest.approx(0.01) and errors["roll"] == 0


def test_probe_command_writes_tables(tmp_path, capsys):
    run = write_untrained_run(tmp_path / "run", step=3)
    code = cli.main(["probe", "--checkpoint", str(run), "--out", str(tmp_path / "probe"), "--num-fit", "64",
                     "--num-eval", "32"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((tmp_path / "probe" / "probe.json").read_text())[0]
    assert report["model"] == "run step 3 (EMA generator)"
    values = [*report["pose_error_raw"].values(), *report["pose_error_calibrated"].values(),
              *report["leakage_r2"].values()]
    assert len(values) == 18 and np.all(np.isfinite(values))
    assert len(report["expression_r2"]) == 11 and np.all(np.isfinite(list(report["expression_r2"].values())))
    assert report["expression_r2_mean"] == pytest.approx(np.mean(list(report["expression_r2"].values())))
    table = (tmp_path / "probe" / "probe.md").read_text()
    assert "Pose leakage into the expression latent" in table and "| jaw_open |" in table
    assert "Expression carried by the expression latent" in table
    assert cli.main(["probe", "--checkpoint", str(run), "--num-fit", "8"]) == 2
    capsys.readouterr()
    before = (tmp_path / "probe" / "probe.json").read_bytes()
    assert cli.main(["probe", "--checkpoint", str(run), "--out", str(tmp_path / "probe")]) == 2
    assert capsys.readouterr().err == (f"dex-portrait probe: error: {tmp_path / 'probe'} already exists; pass "
                                       "--overwrite to replace it\n")
    assert (tmp_path / "probe" / "probe.json").read_bytes() == before
    other = write_untrained_run(tmp_path / "other", step=3, seed=1, expression_norm="affine")
    assert cli.main(["probe", "--checkpoint", str(run), "--checkpoint", str(other), "--out", str(tmp_path / "probe"),
                     "--num-fit", "64", "--num-eval", "32", "--overwrite"]) == 0
    reports = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert [r["model"] for r in reports] == ["run step 3 (EMA generator)", "other step 3 (EMA generator)"]
    own = reports[1]
    # a swapped encoder is scored as its own run scores it, the other encoder stays the probed model's
    for part, kept, moved in (("expression", "pose_error_raw", "expression_r2"),
                              ("pose", "expression_r2", "pose_error_raw")):
        assert cli.main(["probe", "--checkpoint", str(run), f"--{part}-from", str(other), "--out",
                         str(tmp_path / part), "--num-fit", "64", "--num-eval", "32"]) == 0
        swapped = json.loads((tmp_path / part / "probe.json").read_text())[0]
        assert swapped["model"] == f"run step 3 (EMA generator), {part} encoder from other"
        assert swapped[kept] == report[kept]
        assert swapped[moved] != report[moved]
        assert swapped[moved] == pytest.approx(own[moved], abs=1e-6)
    # the expression encoder is probed on the crops its run trained on
    config = json.loads((other / "config.json").read_text())
    config["data"]["expression_align"] = "landmarks"
    (other / "config.json").write_text(json.dumps(config))
    assert cli.main(["probe", "--checkpoint", str(run), "--expression-from", str(other), "--out",
                     str(tmp_path / "aligned"), "--num-fit", "64", "--num-eval", "32"]) == 0
    aligned = json.loads((tmp_path / "aligned" / "probe.json").read_text())[0]
    assert aligned["pose_error_raw"] == report["pose_error_raw"]
    assert aligned["expression_r2"] != pytest.approx(own["expression_r2"], abs=1e-3)
    capsys.readouterr()
    assert cli.main(["probe", "--checkpoint", str(run), "--expression-from", str(tmp_path / "nowhere"), "--out",
                     str(tmp_path / "failed")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dex-portrait probe")]
    assert errors and errors[0].startswith(f"dex-portrait probe: error: --expression-from {tmp_path / 'nowhere'}: ")


def test_probe_help_shows_values_not_names(capsys):
    from dex_jax.evaluate import synth_probe
    with pytest.raises(SystemExit) as exit_:
        cli.main(["probe", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    constants = [name for name in vars(synth_probe) if name.isupper() and len(name) > 3]
    assert constants and not [name for name in constants if name in text]
    assert "%(" not in text
    assert "128x128 px" in text and "yaw -40..40 deg" in text and "fit set identities 0..179" in text
    assert "(default: 1024)" in text and "(default: out/probe)" in text and "--overwrite" in text
