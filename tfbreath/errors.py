"""The base of every error tfbreath raises on purpose, and how a command line reports one.

Each module keeps its own subclass, named for what went wrong: ``ConfigError`` (a setting),
``DataError`` (a data folder or CSV), ``AudioError`` (one audio file), ``IcbhiError`` (the ICBHI
data), ``CrossValidationError`` (clips that cannot be split into the folds), ``StrategyError``
(a distribution strategy), ``OutputPathError`` (an output that cannot be written),
``TFLiteFileError`` (a ``.tflite`` file), ``ClassifierError`` (a model that cannot be loaded or
run), ``ExportError``, ``PredictError``, ``ExplainError`` and ``TuneError`` (a command that cannot
do its job). Every message is one line naming the file or value and the problem, so a command
line catches ``TfbreathError`` alone and prints ``error: <message>`` (``print_error``), while a
bug still shows its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

EXIT_OK = 0
"""Exit code of a command line that did all it was asked."""
EXIT_SKIPPED = 1
"""Exit code of a command line that wrote its output but skipped some inputs (each one reported)."""
EXIT_USAGE = 2
"""Exit code of a command line stopped by a ``TfbreathError`` (bad arguments, settings, data,
model or output path)."""


class TfbreathError(Exception):
    """Base class of tfbreath's errors; the message is one line: ``<file or value>: <problem>``.

    Not itself a ``ValueError``: an export whose model fails its self-check or a search that
    produced nothing is not a bad value. Each subclass also derives from the built-in exception
    that fits it, ``ValueError`` for bad input (``ConfigError``, ``DataError``, ``AudioError``,
    ...) and ``RuntimeError`` for a model or a command that cannot finish (``ClassifierError``,
    ``ExportError``, ``PredictError``, ``ExplainError``, ``TuneError``), so code written against
    the built-ins (``except ValueError``) catches them too.
    """


def one_line(err: BaseException) -> str:
    """The error's message with every run of whitespace (newlines included) made one space."""
    return " ".join(str(err).split())


def print_error(err: TfbreathError) -> int:
    """Print ``error: <message>`` as one line on stderr; return ``EXIT_USAGE`` for the CLI to exit with."""
    print(f"error: {one_line(err)}", file=sys.stderr)
    return EXIT_USAGE


def reported(run: Callable[[], int]) -> int:
    """``run()``'s exit code; for a ``TfbreathError`` it raises, ``print_error``'s one line and code."""
    try:
        return run()
    except TfbreathError as err:
        return print_error(err)
