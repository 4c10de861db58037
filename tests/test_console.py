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
