"""What the command-line tools print: TensorFlow's own log lines only with ``--verbose``.

TensorFlow, tensorflow-io and absl print screens of start-up lines (CUDA probes, oneDNN and
CPU-feature notes, TensorRT, XNNPACK) that say nothing about the user's run. Their C++ side
reads ``TF_CPP_MIN_LOG_LEVEL`` once, when TensorFlow loads, so the choice is made in
``tfbreath/__init__.py`` before any module imports TensorFlow: a command-line run
(``python -m tfbreath.<tool>`` or a ``tfbreath-<tool>`` script) without ``--verbose`` hides
them. A library user importing ``tfbreath`` keeps TensorFlow's settings, and an explicit
``TF_CPP_MIN_LOG_LEVEL`` always wins. The tools' own messages and errors are unaffected.

A tool's argument errors are one line too (``OneLineParser``): ``error: <problem> (see --help)``,
exit code 2, as every other error a tool reports (``tfbreath.errors``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from tfbreath.errors import EXIT_USAGE

VERBOSE_FLAG = "--verbose"
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_TF_LOG_LEVEL = "3"
"""TensorFlow's C++ log level that hides info, warnings and its start-up 'errors' (the CUDA
factory lines of a CPU machine); a failing op still raises in Python."""
QUIET_LOGGERS = ("tensorflow", "absl", "h5py")
"""Python loggers held at ERROR in a quiet run."""
SCRIPT_PREFIX = "tfbreath-"
MODULE_RUN = "-m"
"""``sys.argv[0]`` while ``python -m`` imports the package of the module it runs."""


def is_command_line_run(argv: list[str] | None = None) -> bool:
    """Whether this process is one of tfbreath's tools being started (not a library import)."""
    argv = sys.argv if argv is None else argv
    return bool(argv) and (argv[0] == MODULE_RUN or Path(argv[0]).name.startswith(SCRIPT_PREFIX))


def quiet_unless_verbose(argv: list[str] | None = None) -> bool:
    """Hide TensorFlow's log lines for a command-line run without ``--verbose``; True if hidden.

    Must run before TensorFlow is imported (its C++ side reads the level once).
    """
    argv = sys.argv if argv is None else argv
    if not is_command_line_run(argv) or VERBOSE_FLAG in argv[1:]:
        return False
    os.environ.setdefault(TF_LOG_LEVEL_ENV, QUIET_TF_LOG_LEVEL)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    return True


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--verbose`` flag every tool takes (read before parsing, by ``quiet_unless_verbose``)."""
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="also show TensorFlow's own log lines (hidden by default)")


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line ``error: ...`` (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
