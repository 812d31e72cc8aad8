"""The output folder of a command: refused when it exists unless --overwrite, written complete or not at all.

Every command that writes a folder (animate, evaluate, probe, export, convert, data build) goes through
`staged_output_dir`: the files are written into a temporary sibling `.NAME.*.partial` and renamed to NAME only
when the block completes. A failure removes the temporary folder and leaves NAME as it was; with overwrite an
existing NAME is replaced only after the new folder is complete. Commands call `check_output_dir` first too, so
an existing folder is refused before any work is done.
"""

import contextlib
import secrets
import shutil
from pathlib import Path

OVERWRITE_HELP = "replace the output folder if it exists (the old one stays until the new one is complete)"


def add_overwrite_argument(parser):
    """The shared `--overwrite` flag."""
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def check_output_dir(path, overwrite, reason=""):
    """`path` as an absolute Path; ValueError naming it and --overwrite when it exists and overwrite is off
    (`reason`, when given, is added to the message), or when it exists and is not a folder."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists{reason}; pass --overwrite to replace it")
    return path


@contextlib.contextmanager
def staged_output_dir(path, overwrite=False):
    """Yield an empty temporary folder beside `path` (refused as in `check_output_dir`); it becomes `path` when
    the block completes, replacing an existing folder only then; on an exception it is removed."""
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _new_sibling(path, ".partial")
    try:
        yield staging
        _move_into_place(staging, check_output_dir(path, overwrite))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _new_sibling(path, suffix):
    """A new empty folder `.NAME.<random>SUFFIX` beside `path`, with the permissions mkdir gives (the umask's)."""
    while True:
        folder = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _move_into_place(staging, path):
    """Rename `staging` to `path`. An existing `path` is set aside first, put back if the rename fails, and deleted
    only once `staging` is in its place."""
    if not path.exists():
        staging.rename(path)
        return
    holder = _new_sibling(path, ".old")
    try:
        path.rename(holder / path.name)
    except BaseException:
        holder.rmdir()
        raise
    try:
        staging.rename(path)
    except BaseException:
        (holder / path.name).rename(path)
        holder.rmdir()
        raise
    shutil.rmtree(holder)
