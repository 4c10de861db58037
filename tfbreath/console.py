"""What the command-line tools print: TensorFlow's own log lines only with ``--verbose``.

TensorFlow, tensorflow-io and absl print screens of start-up lines (CUDA probes, oneDNN and
CPU-feature notes, TensorRT, XNNPACK) that say nothing about the user's run. Their C++ side
reads ``TF_CPP_MIN_LOG_LEVEL`` once, when TensorFlow loads, so the choice is made in
``tfbreath/__init__.py`` before any module imports TensorFlow: a command-line run
(``python -m tfbreath.<tool>`` or a ``tfbreath-<tool>`` script) without ``--verbose`` hides
them. A library user importing ``tfbreath`` keeps TensorFlow's settings, and an explicit
``TF_CPP_MIN_LOG_LEVEL`` always wins. The tools' own messages and errors are unaffected.

Some native lines do not read that level: TFLite's interpreter writes ``INFO: Created TensorFlow
Lite XNNPACK delegate for CPU.`` and its converter absl's ``W0000 ...`` notes straight to the
process's stderr. ``native_notes_hidden`` drops those the level hides, around the calls that print
them, and passes every other line on.

A tool's argument errors are one line too (``OneLineParser``): ``error: <problem> (see --help)``,
exit code 2, as every other error a tool reports (``tfbreath.errors``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterator, NoReturn

from tfbreath.errors import EXIT_USAGE

VERBOSE_FLAG = "--verbose"
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_TF_LOG_LEVEL = "3"
"""TensorFlow's C++ log level that hides info, warnings and its start-up 'errors' (the CUDA
factory lines of a CPU machine); a failing op still raises in Python."""
QUIET_LOGGERS = ("tensorflow", "absl", "h5py")
"""Python loggers held at ERROR in a quiet run."""
NATIVE_NOTES = {1: re.compile(r"INFO: |I\d{4} "),
                2: re.compile(r"WARNING: All log messages before absl::InitializeLog|W\d{4} ")}
"""Native stderr lines that ignore ``TF_CPP_MIN_LOG_LEVEL``, by the least level that hides them
(TensorFlow's: 1 hides info, 2 warnings): TFLite's ``INFO:`` lines and absl's ``I``/``W`` lines
(severity letter, then month and day)."""
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


@contextlib.contextmanager
def native_notes_hidden() -> Iterator[None]:
    """Inside the block, stderr lines of native code that ``TF_CPP_MIN_LOG_LEVEL`` would hide
    (``NATIVE_NOTES``) are dropped; every other line is written out when the block ends.

    Works on file descriptor 2, where TFLite and absl write; with the level unset (0) it does nothing.
    """
    level = os.environ.get(TF_LOG_LEVEL_ENV, "0")
    hidden = [pattern for least, pattern in NATIVE_NOTES.items() if level.isdigit() and int(level) >= least]
    if not hidden:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not any(p.match(line) for p in hidden)))
            sys.stderr.flush()


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--verbose`` flag every tool takes (read before parsing, by ``quiet_unless_verbose``)."""
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="also show TensorFlow's own log lines (hidden by default)")


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line ``error: ...`` (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
