"""The command-line tools are quiet by default: TensorFlow's own log lines only with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tfbreath import console


@pytest.mark.parametrize("argv, expected", [
    (["-m", "--model", "x"], True),  # python -m tfbreath.<tool>, while the package is imported
    (["/usr/local/bin/tfbreath-fit"], True),
    (["/usr/bin/pytest", "-q"], False),
    (["script.py"], False),
    ([], False),
])
def test_a_command_line_run_is_told_from_a_library_import(argv, expected):
    assert console.is_command_line_run(argv) is expected


def test_quiet_sets_the_tensorflow_log_level_unless_verbose_or_already_set(monkeypatch):
    monkeypatch.delenv(console.TF_LOG_LEVEL_ENV, raising=False)
    assert not console.quiet_unless_verbose(["-m", console.VERBOSE_FLAG])
    assert console.TF_LOG_LEVEL_ENV not in os.environ
    assert console.quiet_unless_verbose(["-m"])
    assert os.environ[console.TF_LOG_LEVEL_ENV] == console.QUIET_TF_LOG_LEVEL
    monkeypatch.setenv(console.TF_LOG_LEVEL_ENV, "0")
    console.quiet_unless_verbose(["-m"])
    assert os.environ[console.TF_LOG_LEVEL_ENV] == "0"  # the user's own setting wins


def _stderr(tmp_path, *flags):
    env = {k: v for k, v in os.environ.items() if k != console.TF_LOG_LEVEL_ENV}
    result = subprocess.run([sys.executable, "-m", "tfbreath.export", "--model", str(tmp_path / "missing"), *flags],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    return result.stderr.strip().splitlines()


def test_a_tool_prints_only_its_own_error_unless_verbose(tmp_path):
    quiet = _stderr(tmp_path)
    assert len(quiet) == 1 and quiet[0].startswith(f"error: {tmp_path / 'missing'}: not a run folder"), quiet
    verbose = _stderr(tmp_path, console.VERBOSE_FLAG)
    assert verbose[-1] == quiet[0] and len(verbose) > 1  # TensorFlow's start-up lines come back


NATIVE_LINES = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                "W0000 00:00:1796637588.970044    8964 tf_tfl_flatbuffer_helpers.cc:392] Ignored output_format.\n"
                "I0000 00:00:1796637588.970109    8964 flatbuffer_export.cc:1] Estimated count of arithmetic ops\n"
                "E0000 00:00:1796637588.970109    8964 interpreter.cc:1] a real error\n"
                "INFORMATION is not a note\n")


@pytest.mark.parametrize("level, kept", [
    ("0", NATIVE_LINES.splitlines(keepends=True)),
    ("1", [line for line in NATIVE_LINES.splitlines(keepends=True) if not line.startswith(("INFO: ", "I0000"))]),
    ("3", NATIVE_LINES.splitlines(keepends=True)[-2:]),
])
def test_native_notes_are_hidden_as_tensorflow_s_log_level_says(level, kept, monkeypatch, capfd):
    """Lines written to file descriptor 2 (as TFLite and absl do), not through sys.stderr."""
    monkeypatch.setenv(console.TF_LOG_LEVEL_ENV, level)
    with console.native_notes_hidden():
        os.write(2, NATIVE_LINES.encode())
        os.write(1, b"stdout is untouched\n")
    out, err = capfd.readouterr()
    assert err == "".join(kept) and out == "stdout is untouched\n"


TFLITE_RUN = """
import keras, numpy as np, tensorflow as tf
from tfbreath.serving import TFLiteClassifier
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, activation="sigmoid")])
flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
print("ran", TFLiteClassifier(flatbuffer)(np.zeros((2, 8))).shape)
"""


@pytest.mark.parametrize("level, noted", [("3", False), ("0", True)])
def test_the_tflite_interpreter_s_delegate_note_is_hidden(level, noted):
    """TFLite prints its XNNPACK note once per process: each level gets a process of its own."""
    result = subprocess.run([sys.executable, "-c", TFLITE_RUN], capture_output=True, text=True, timeout=300,
                            env={**os.environ, console.TF_LOG_LEVEL_ENV: level})
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "ran (2,)", result.stderr
    assert ("XNNPACK delegate" in result.stderr) is noted, result.stderr


@pytest.mark.parametrize("tool", ["fit", "tune", "predict", "export", "explain", "features.__main__"])
def test_every_tool_takes_verbose(tool, capsys):
    """``quiet_unless_verbose`` reads the flag before parsing: each tool's parser must accept it too."""
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"tfbreath.{tool}").main(["--help"])
    assert exit_info.value.code == 0 and console.VERBOSE_FLAG in capsys.readouterr().out
