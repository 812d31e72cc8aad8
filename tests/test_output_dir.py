"""output_dir: an existing folder refused unless overwrite, a folder written complete or not at all, an old folder
replaced only once the new one is complete; `dex-portrait convert` refuses before it reads any weights."""

from pathlib import Path

import pytest

from dex_jax import cli
from dex_jax.output_dir import staged_output_dir


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_an_existing_folder_is_refused_before_the_block_runs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    ran = []
    with pytest.raises(ValueError) as error:
        with staged_output_dir(out):
            ran.append(True)
    assert str(error.value) == f"{out} already exists; pass --overwrite to replace it" and not ran
    assert (out / "a.txt").read_text() == "old" and names(tmp_path) == ["out"]


def test_a_new_folder_appears_only_when_complete(tmp_path):
    out = tmp_path / "sub" / "out"
    with staged_output_dir(out) as staging:
        (staging / "a.txt").write_text("new")
        assert not out.exists() and staging.parent == out.parent and staging.name.startswith(".out.")
    assert (out / "a.txt").read_text() == "new" and names(out.parent) == ["out"]
    reference = tmp_path / "made_by_mkdir"
    reference.mkdir()
    assert out.stat().st_mode == reference.stat().st_mode  # the umask's permissions, not a private temp folder's


def test_a_failure_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError, match="half-way"):
        with staged_output_dir(tmp_path / "out") as staging:
            (staging / "a.txt").write_text("partial")
            raise RuntimeError("failed half-way")
    assert names(tmp_path) == []


def test_overwrite_replaces_the_old_folder_only_once_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_output_dir(out, overwrite=True) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("failed")
    assert names(out) == ["old.txt"] and names(tmp_path) == ["out"]
    with staged_output_dir(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
        assert names(out) == ["old.txt"]
    assert names(out) == ["new.txt"] and names(tmp_path) == ["out"]


def test_a_failed_final_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    rename = Path.rename

    def failing(self, target):
        if self.name.endswith(".partial"):
            raise OSError("rename failed")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="rename failed"):
        with staged_output_dir(out, overwrite=True) as staging:
            (staging / "new.txt").write_text("new")
    assert names(out) == ["old.txt"] and names(tmp_path) == ["out"]


def test_a_file_in_the_way_is_never_replaced(tmp_path):
    path = tmp_path / "out"
    path.write_text("a file")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        with staged_output_dir(path, overwrite=True):
            pass
    assert path.read_text() == "a file" and names(tmp_path) == ["out"]


def test_convert_refuses_an_existing_folder_before_reading_any_weights(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code = cli.main(["convert", "diffusers", "--vae", str(tmp_path / "no_weights_here"), "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == (f"dex-portrait convert: error: {out} already exists; pass --overwrite to "
                                       "replace it\n")
    assert names(out) == ["keep.txt"]
