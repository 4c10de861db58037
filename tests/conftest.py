"""Shared test fixtures: paths to ../shared/data, small synthetic audio made on the fly, and
the tolerance for one clip's scalars computed along different paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402  (after the TF log level)

from tfbreath.scalars import SCALAR_NAMES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TFBREATH_SHARED_DATA", REPO.parent / "shared" / "data"))
BREATH_DIR = SHARED_DATA / "breath"
ICBHI_DIR = SHARED_DATA / "icbhi_sample"

SAMPLE_RATE = 16000


def _skip_without(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.is_dir(), reason=f"needs the shared data folder {path} (absent)")


needs_breath = _skip_without(BREATH_DIR)
needs_icbhi = _skip_without(ICBHI_DIR)


@pytest.fixture(autouse=True)
def _no_leaked_dtype_policy():
    """A test that changes Keras' global dtype policy must restore it (``precision.global_policy``);
    one that does not fails here, and the next test still starts from float32."""
    yield
    leaked = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    assert leaked == "float32", f"the test left Keras' global dtype policy at {leaked}"


class InterruptAfter(keras.callbacks.Callback):
    """A kill at the end of ``epoch``, after the epoch's checkpoint was committed."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated kill")


def sine(freq_hz: float = 440.0, seconds: float = 1.0, sample_rate: int = SAMPLE_RATE,
         amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def breath_like(seed: int, seconds: float = 1.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited noise under a smooth swell: a stand-in for one breathing-phase clip."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    noise = np.convolve(rng.standard_normal(n), np.hanning(16), mode="same")
    swell = np.sin(np.pi * np.linspace(0.05, 0.95, n)) ** 2
    return (0.3 * noise / np.abs(noise).max() * swell).astype(np.float32)


@pytest.fixture
def write_wav(tmp_path):
    """Write float audio as a WAV with the given soundfile subtype; returns the path."""

    def _write(name: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
               subtype: str = "PCM_16", fmt: str = "WAV") -> Path:
        path = tmp_path / name
        sf.write(path, audio, sample_rate, subtype=subtype, format=fmt)
        return path

    return _write


def real_clips(n: int) -> list[Path]:
    """The first ``n`` real training clips (sorted by name), for parity tests."""
    return sorted((BREATH_DIR / "train").glob("*.wav"))[:n]


SAME_RTOL = 1e-5
SKEW_ATOL = 2e-5
"""Absolute tolerance of the skewness/kurtosis columns when the same clip is computed in
different batch shapes: the batch size changes the float32 summation order of the spectral
matmuls, and a third moment of a near-symmetric series (value ~0.2) turns those last-bit
differences into ~1e-5 absolute. Every other column keeps atol 1e-6."""
SAME_ATOL = np.array([SKEW_ATOL if name.endswith(("_skew", "_kurtosis")) else 1e-6 for name in SCALAR_NAMES])


def assert_same_scalars(got, want):
    """Same clips, different batching or call path: equal up to float32 summation order."""
    got, want = np.asarray(got), np.asarray(want)
    tolerance = SAME_ATOL + SAME_RTOL * np.abs(want)
    bad = np.abs(got - want) > tolerance
    assert not bad.any(), (f"{bad.sum()} values differ, worst in "
                           f"{SCALAR_NAMES[np.argwhere(bad)[0][-1]]}: {got[bad][:3]} vs {want[bad][:3]}")


def assert_features_equal(got: dict, want: dict) -> None:
    """Two ``extract_features`` results (as NumPy), key by key, bit for bit."""
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
