"""Shared test fixtures: paths to ../shared/data, small synthetic audio made on the fly (including
the breathing-like clips of the librosa parity tests), and the tolerance for one clip's scalars
computed along different paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402  (after the TF log level)

from tfbreath import synthetic  # noqa: E402
from tfbreath.config import SCALAR_NAMES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TFBREATH_SHARED_DATA", REPO.parent / "shared" / "data"))
BREATH_DIR = SHARED_DATA / "breath"
ICBHI_DIR = SHARED_DATA / "icbhi_sample"

SAMPLE_RATE = 16000
BAND_LIMIT_HZ = 2000.0
"""The shipped recipe's band limit (``pipelines/breath_phase_cpu.toml``): the clips' 4-kHz recordings."""


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


def compile_for_test(model: keras.Model, learning_rate: float = 1e-3, eager: bool = True) -> None:
    """Adam, binary cross-entropy on the logit, accuracy at logit 0: a model's short test fit."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)],
                  run_eagerly=eager, jit_compile=False)


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


PARITY_KINDS = ("inhale", "exhale", "breath", "wheeze", "chirp", "crackles")
"""The synthetic clips of the librosa parity tests (``parity_clip``), so every feature is checked
without ``../shared``: ``tfbreath.synthetic``'s inhale and exhale (band-passed noise under a
Gaussian swell, over hiss), ``breath_like``, a wheeze (a tone under a swell in breath noise), a
chirp (a sweep under a Hann window) and crackles (short decaying bursts in breath noise)."""

PARITY_HISS = 0.01
"""RMS of the noise floor under the wheeze, chirp and crackles (-30 dB re their tones). Burg's LPC
of a noiseless tone or sweep is round-off, float32 in one implementation and float64 in the other
(measured: LPC maps apart by O(1)); a stethoscope always hears some hiss."""

TONE_AMPLITUDE = 0.3
"""Peak of the wheeze's tone, the chirp and each crackle."""

BACKGROUND_GAIN = 0.5
"""Gain on ``breath_like`` under the wheeze and the crackles."""

WHEEZE_HZ = (150.0, 1000.0)
"""The wheeze's pitch is drawn from this range (wheezes sit roughly at 100 Hz - 1 kHz)."""

CHIRP_HZ = (100.0, 4000.0)
"""The chirp's start and end frequencies are drawn from this range (start below end)."""

CRACKLES_PER_CLIP = 12
CRACKLE_SAMPLES = 400
"""25 ms per crackle at 16 kHz."""
CRACKLE_DECAY_SAMPLES = 60
"""A crackle's exponential decay constant (about 4 ms)."""
CRACKLE_HZ = (300.0, 1500.0)
"""Each crackle's ringing frequency is drawn from this range."""


def parity_clip(kind: str, seed: int) -> np.ndarray:
    """One 1-s clip of a ``PARITY_KINDS`` kind at ``SAMPLE_RATE``, varied by ``seed``. ``[n]`` float32"""
    rng = np.random.default_rng((PARITY_KINDS.index(kind), seed))
    n = SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    if kind in ("inhale", "exhale"):
        band_shift = rng.uniform(-synthetic.BAND_JITTER, synthetic.BAND_JITTER)
        return synthetic.synthetic_clip(kind[0].upper(), rng, SAMPLE_RATE, n, band_shift,
                                        rng.uniform(*synthetic.GAIN_RANGE_DB))
    if kind == "breath":
        return breath_like(seed)
    hiss = PARITY_HISS * rng.standard_normal(n)
    if kind == "wheeze":
        tone = np.sin(2 * np.pi * rng.uniform(*WHEEZE_HZ) * t) * np.sin(np.pi * t) ** 2
        y = TONE_AMPLITUDE * tone + BACKGROUND_GAIN * breath_like(seed) + hiss
    elif kind == "chirp":
        low, high = np.sort(rng.uniform(*CHIRP_HZ, size=2))
        y = TONE_AMPLITUDE * scipy.signal.chirp(t, low, t[-1], high) * np.hanning(n) + hiss
    else:  # crackles
        y = BACKGROUND_GAIN * breath_like(seed) + hiss
        k = np.arange(CRACKLE_SAMPLES)
        for start in rng.integers(0, n - CRACKLE_SAMPLES, CRACKLES_PER_CLIP):
            ringing = np.sin(2 * np.pi * rng.uniform(*CRACKLE_HZ) * k / SAMPLE_RATE)
            y[start:start + CRACKLE_SAMPLES] += TONE_AMPLITUDE * np.exp(-k / CRACKLE_DECAY_SAMPLES) * ringing
    return y.astype(np.float32)


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


def fitted_closed_form(name: str, pipeline, tmp_path_factory):
    """The closed-form member ``name`` (``pooled`` or ``rbf``) fitted by ``train.fit_closed_form``
    on synthetic breath (separable by band), with its training and held-out clips and its run
    folder: ``(model, train_set, val_set, out)``."""
    from tfbreath import data, train

    root = synthetic.write_synthetic_breath(tmp_path_factory.mktemp(f"{name}_data"), n_sessions=12,
                                            clips_per_session=3)
    train_examples, val_examples = data.split_by_session(data.read_kaggle_train(root), 0.34, seed=0)
    train_set = data.extract(train_examples, None, pipeline, progress=False)
    val_set = data.extract(val_examples, None, pipeline, progress=False)
    out = tmp_path_factory.mktemp(f"{name}_run")
    return train.fit_closed_form(name, pipeline, train_set, val_set, out), train_set, val_set, out


def closed_form_fit_view(model, train_set, val_set):
    """What a fitted closed-form member was fitted on and gives, over its training then held-out
    clips: ``(z [N, D] standardised statistics, labels [N], P(exhale) [N])``."""
    import keras

    from tfbreath import train
    from tfbreath.models.pooled import POOLED_NORM, POOLED_STATS

    stats = keras.Model(model.input, model.get_layer(POOLED_STATS).output)
    x = np.concatenate([stats.predict(s.batches(8), verbose=0) for s in (train_set, val_set)]).astype(np.float64)
    labels = np.concatenate([train_set.kept_examples.labels, val_set.kept_examples.labels])
    z = np.asarray(model.get_layer(POOLED_NORM)(x.astype(np.float32)), np.float64)
    feeds = np.concatenate([train.predict_probabilities(model, s, 8) for s in (train_set, val_set)])
    return z, labels, feeds
