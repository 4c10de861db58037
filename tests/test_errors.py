"""One error base class: every error class of the package is a ``TfbreathError``, and every CLI
reports one as a single ``error:`` line with exit code 2."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import tfbreath
from conftest import REPO
import tfbreath.features.__main__ as features_cli
from tfbreath import errors, explain, export, fit, predict, tune
from tfbreath.config import ConfigError
from tfbreath.errors import TfbreathError

RUNTIME = {"ClassifierError", "ExplainError", "ExportError", "PredictError", "TuneError"}
"""Error classes of a model or a command that cannot finish: ``RuntimeError`` (the others are ``ValueError``)."""
KNOWN = {"AudioError", "ConfigError", "CrossValidationError", "DataError", "IcbhiError", "OutputPathError",
         "StrategyError", "TFLiteFileError"} | RUNTIME
"""Error classes the package has had; they keep their names (and their built-in bases)."""


def _error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the package, by qualified name."""
    found = {}
    for module_info in pkgutil.walk_packages(tfbreath.__path__, prefix="tfbreath."):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == module.__name__):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_error_class_of_the_package_subclasses_the_base():
    classes = _error_classes()
    assert KNOWN <= {cls.__name__ for cls in classes.values()}, sorted(classes)
    strays = [name for name, cls in classes.items() if not issubclass(cls, TfbreathError)]
    assert not strays, f"error classes outside TfbreathError: {strays}"


def test_the_subclasses_keep_their_builtin_bases():
    classes = {cls.__name__: cls for cls in _error_classes().values()}
    for name in KNOWN - RUNTIME:
        assert issubclass(classes[name], ValueError), name
    for name in RUNTIME:
        assert issubclass(classes[name], RuntimeError), name
    assert not issubclass(TfbreathError, ValueError)


def test_one_line_joins_the_lines_of_a_message():
    assert errors.one_line(ConfigError("a.toml: bad\n  value")) == "a.toml: bad value"


def test_reported_passes_the_exit_code_and_turns_a_package_error_into_one_line(capsys):
    assert errors.reported(lambda: errors.EXIT_SKIPPED) == errors.EXIT_SKIPPED

    def failing() -> int:
        raise ConfigError("a.toml: n_mels must be > 0, got 0")

    assert errors.reported(failing) == errors.EXIT_USAGE
    assert capsys.readouterr().err == "error: a.toml: n_mels must be > 0, got 0\n"
    with pytest.raises(KeyError):  # anything else is a bug: its traceback is kept
        errors.reported(lambda: {}["missing"])


def _bad_pipeline(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[features]\nn_mels = 0\n")
    return path


@pytest.mark.parametrize("cli, argv, expected", [
    ("fit", lambda t: ["--data", t / "absent"], "absent: data folder not found"),
    ("fit", lambda t: ["--pipeline", REPO / "pipelines" / "icbhi_respirenet.toml", "--data", t / "absent"],
     "absent: data folder not found"),  # the ICBHI trainer, through fit
    ("tune", lambda t: ["--data", t / "absent"], "absent"),
    ("export", lambda t: ["--model", t], "not a run folder"),
    ("predict", lambda t: ["--model", t / "absent.tflite", t / "clip.wav"], "no such model file"),
    ("explain", lambda t: ["--model", t / "absent.keras", t / "clip.wav", "--out", t / "out"], "clip.wav: no such file"),
    ("features", lambda t: [t / "clip.wav", "--out", t / "x.npz", "--pipeline", _bad_pipeline(t)],
     "n_mels must be > 0, got 0"),
])
def test_a_cli_reports_an_error_as_one_line_and_exit_2(cli, argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TFBREATH_DATA", raising=False)
    main = {"fit": fit.main, "tune": tune.main, "export": export.main, "predict": predict.main,
            "explain": explain.main, "features": features_cli.main}[cli]
    code = main([str(arg) for arg in argv(tmp_path)])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == errors.EXIT_USAGE, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
