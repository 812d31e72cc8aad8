"""The argument parser every `dex-portrait` command uses: a usage error is one line, not usage text plus a line.

`ArgumentParser.error` raises `UsageError` (a ValueError) whose text ends with where help is; `dex-portrait`
prints it as `dex-portrait COMMAND: error: MESSAGE (see dex-portrait COMMAND --help)` with exit status 2.
Subcommand parsers made by `add_subparsers` are of the same class.
"""

import argparse


class UsageError(ValueError):
    """A command line that does not parse."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose usage errors raise UsageError instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")
