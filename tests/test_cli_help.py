"""`dex-portrait --help` and the help of every command: exit status 0 and the names each must list; a usage error
is one line pointing to the help; --verbose is taken before or after the command."""

import re

import pytest

from dex_jax import cli

COMMANDS = ("animate", "bench", "convert", "data", "evaluate", "export", "probe", "serve", "train")
BENCHMARKS = ("motion", "conv", "stage1", "unet", "synth", "data", "animator", "animate")
WRITERS = (("animate",), ("evaluate",), ("export",), ("probe",), ("convert", "diffusers"), ("data", "build"))


def help_of(capsys, *args):
    """What `dex-portrait ARGS --help` prints, whitespace as printed; asserts it exits 0."""
    try:
        code = cli.main([*args, "--help"])
    except SystemExit as exit_:  # argparse's --help
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_top_level_help_lists_every_command_and_verbose(capsys):
    text = help_of(capsys)
    for name in COMMANDS:
        assert re.search(rf"^  {name} +\S", text, re.M), name
    assert "--verbose" in text


def test_convert_help_lists_each_source_with_what_it_takes(capsys):
    text = help_of(capsys, "convert")
    assert re.search(r"^  diffusers +\S.*--unet PATH --vae PATH --out DIR", text, re.M)
    text = help_of(capsys, "convert", "diffusers")
    assert text.startswith("usage: dex-portrait convert diffusers")
    for option in ("--unet", "--vae", "--out", "--overwrite"):
        assert option in text


def test_serve_help_names_the_model_and_address_options(capsys):
    text = help_of(capsys, "serve")
    assert text.startswith("usage: dex-portrait serve")
    for option in ("--checkpoint", "--engine", "--port", "--host", "--steps"):
        assert option in text


def test_bench_help_lists_every_benchmark_one_line_each(capsys):
    lines = help_of(capsys, "bench").splitlines()
    for name in BENCHMARKS:
        assert len([line for line in lines if re.fullmatch(rf"  {name} +\S.*", line)]) == 1, name


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_has_help(capsys, name):
    text = help_of(capsys, "bench", name)
    assert text.startswith(f"usage: dex-portrait bench {name}") and "machine:" not in text
    description = text.split("\n\n")[1]  # the paragraph after the usage lines
    assert not description.startswith("options:") and len(description) > 30


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
def test_every_command_that_writes_a_folder_offers_overwrite(capsys, command):
    text = help_of(capsys, *command)
    assert text.startswith(f"usage: dex-portrait {' '.join(command)}") and "--overwrite" in text


BAD_USAGE = (("animate", "--steps", "x"), ("bench", "motion", "--bogus"), ("convert", "diffusers"),
             ("data", "build", "nope"), ("evaluate", "--protocol", "nope"), ("export",), ("probe", "--nope"),
             ("train", "--bogus"))


@pytest.mark.parametrize("argv", BAD_USAGE, ids=" ".join)
def test_a_usage_error_is_one_line_that_points_to_help(capsys, argv):
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "usage:" not in err, err
    assert re.fullmatch(rf"dex-portrait {argv[0]}: error: .+ \(see dex-portrait {argv[0]}\b.* --help\)\n", err), err


def test_verbose_may_follow_the_command(capsys):
    assert cli.main(["export", "--verbose"]) == cli.main(["--verbose", "export"]) == 2
    err = capsys.readouterr().err
    assert "--verbose" not in err and err.count("required: --workdir, --out") == 2, err
