"""``benchmarks/robustness.py`` (issue 19): its perturbations do what they claim, its bookkeeping
counts right, and the feature graph of a clip resampled to 8 kHz and 48 kHz (as a real WAV, read
back through the package's decoder) stays close to the original's where it should.

``benchmarks/`` is not a package: the module is loaded from its file with importlib, so the tests
exercise the benchmark's own perturbation functions (no copy here).

Feature tolerances are in the model input's units (every map is z-scored, so 1 is a map's own
spread over its cells), set from measurement at 2-25x the worst change seen (synthetic clips:
16-bit, band-limited to 1.8 kHz; real clips: the first four of the shared data), and each test
checks that a *different* clip lies at least 3x beyond them. A 4-ms shift of the resampled copy
fails them all (tried).
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import BAND_LIMIT_HZ, BREATH_DIR, REPO, SAMPLE_RATE, breath_like, needs_breath, real_clips

BENCHMARK = REPO / "benchmarks" / "robustness.py"
BREATH_PRESENT = BREATH_DIR.is_dir()


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("robustness_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


rb = _load_benchmark()

CONTENT_HZ = 1800.0
"""Synthetic clips are band-limited here, below the 2-kHz edge (the real clips are 4-kHz recordings)."""
LOUD_PEAK = 0.3
QUIET_PEAK = 0.01
"""About 330 LSB: the 80-dB window of the dB mel then reaches the 16-bit noise floor, as it does
for the quieter real clips (a tenth of them peak below 0.05)."""
GAIN_PEAK = 0.2
"""Leaves room for +6 dB in 16 bits."""
CLIPPING_PEAK = 0.8
"""+6 dB of this does not fit 16 bits."""

GAIN_TOLERANCE_DB = 0.01
SNR_TOLERANCE_DB = 0.3
TPDF_CHANGE_FRACTION = 0.25
"""P(|d| > 1/2) for triangular d on (-1, 1): the share of samples one LSB of TPDF dither moves."""
TPDF_FRACTION_TOLERANCE = 0.03
TPDF_MEAN_TOLERANCE = 0.02

RESAMPLED = (8000, 48000)
SYNTHETIC_TOLERANCE = {
    "mel/<2k": 0.01, "mel_delta/<2k": 0.025, "mel_delta2/<2k": 0.05, "mfcc/all": 0.025,
    "chroma/all": 0.01, "gammatone/all": 0.002, "modulation/all": 0.005, "tempogram/all": 0.005,
}
"""A loud clip with nothing above 1.8 kHz, 16 -> 8 or 48 kHz -> 16 kHz: measured at most 0.0014,
0.0045, 0.011, 0.0046, 0.001, 0.0001, 0.0003, 0.0002 (a different clip: 0.09 to 1.6)."""
REAL_TOLERANCE = {"mel/<2k": 0.02, "mel_delta/<2k": 0.06, "mel_delta2/<2k": 0.06, "gammatone/all": 0.01}
"""Real clips (first four of the shared data measured): at most 0.006, 0.028, 0.028, 0.004."""
ANY_MAP_TOLERANCE = 0.05
"""What issue 19 asks of every map. Full band: measured 0.07-0.5 for the upper mel bands, tempogram
and MFCC of real clips, 0.6-1.4 for LPC (8 kHz round trip worst). Band-limited at 2 kHz: at most
0.008 (loud synthetic clip) and 0.014 (real clips), mel_delta2 below 2 kHz."""
QUIET_MAP_TOLERANCE = 0.3
"""The quiet clip (330 LSB peak) band-limited: at most 0.185 (mel_delta2, 8 kHz), the 16-bit
requantisation of the resampled copy inside the passband; full band: 0.74-1.4 (LPC)."""
OTHER_CLIP_MARGIN = 3.0
"""A different clip must move a map at least this many tolerances: the comparison discriminates."""


def _band_limited_clip(seed: int, peak: float) -> np.ndarray:
    """Breath-like noise with nothing above ``CONTENT_HZ``, at ``peak``, on the 16-bit grid. ``[16000]``"""
    y = rb.band_limited(breath_like(seed)[np.newaxis], SAMPLE_RATE, CONTENT_HZ)[0].astype(np.float64)
    return rb.to_pcm16(y * peak / np.abs(y).max()) / rb.PCM16_SCALE


def _write_pcm16(path, y: np.ndarray, rate: int = SAMPLE_RATE):
    return rb.Encoded(rb.to_pcm16(y), rate, rb.PCM_16).write(path)


def _rms_db(y: np.ndarray) -> float:
    return 10.0 * np.log10(np.mean(np.square(np.asarray(y, np.float64))))


def _as_float(encoded) -> np.ndarray:
    """An ``Encoded``'s samples in full-scale units (16-bit integers only here)."""
    return encoded.samples.astype(np.float64) / rb.PCM16_SCALE


# ---------------------------------------------------------------------------------------------
# Perturbations
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("db", rb.GAIN_DB)
def test_gain_changes_the_rms_by_the_stated_db(db):
    y = _band_limited_clip(0, GAIN_PEAK)
    encoded = rb.gained(db)(y, SAMPLE_RATE, np.random.default_rng(0))
    assert encoded.subtype == rb.PCM_16 and not encoded.note
    assert _rms_db(_as_float(encoded)) - _rms_db(y) == pytest.approx(db, abs=GAIN_TOLERANCE_DB)


def test_gain_that_would_clip_16_bits_is_written_as_float_unclipped(tmp_path):
    y = _band_limited_clip(0, CLIPPING_PEAK)
    factor = 10.0 ** (max(rb.GAIN_DB) / 20.0)
    encoded = rb.gained(max(rb.GAIN_DB))(y, SAMPLE_RATE, np.random.default_rng(0))
    assert encoded.subtype == rb.FLOAT and encoded.note
    written, _ = sf.read(encoded.write(tmp_path / "loud.wav"), dtype="float64")
    assert np.abs(written).max() > 1.0  # beyond full scale, kept
    np.testing.assert_allclose(written, y * factor, rtol=1e-6)


def test_to_pcm16_refuses_to_clip():
    assert rb.to_pcm16(np.array([-1.0]))[0] == rb.PCM16_MIN
    with pytest.raises(rb.ClipError, match="does not fit 16-bit PCM"):
        rb.to_pcm16(np.array([1.0]))


@pytest.mark.parametrize("rate", rb.RESAMPLE_RATES)
def test_resampling_writes_the_stated_rate_and_duration(tmp_path, rate):
    y = _band_limited_clip(0, LOUD_PEAK)
    path = rb.resampled(rate)(y, SAMPLE_RATE, np.random.default_rng(0)).write(tmp_path / "moved.wav")
    info = sf.info(path)
    assert (info.samplerate, info.frames, info.subtype) == (rate, rate * len(y) // SAMPLE_RATE, rb.PCM_16)
    assert rb.decode_clips([path], SAMPLE_RATE, 1.0).shape == (1, SAMPLE_RATE)


def test_tpdf_dither_moves_each_sample_by_at_most_one_lsb():
    y = _band_limited_clip(0, LOUD_PEAK)
    moved = rb.tpdf_dithered()(y, SAMPLE_RATE, np.random.default_rng(0)).samples.astype(np.int64)
    step = moved - rb.to_pcm16(y).astype(np.int64)
    assert np.abs(step).max() == 1
    assert np.mean(step != 0) == pytest.approx(TPDF_CHANGE_FRACTION, abs=TPDF_FRACTION_TOLERANCE)
    assert abs(step.mean()) < TPDF_MEAN_TOLERANCE


def test_white_noise_has_the_stated_snr():
    y = _band_limited_clip(0, LOUD_PEAK)
    noisy = _as_float(rb.with_noise(rb.NOISE_SNR_DB)(y, SAMPLE_RATE, np.random.default_rng(0)))
    assert _rms_db(y) - _rms_db(noisy - y) == pytest.approx(rb.NOISE_SNR_DB, abs=SNR_TOLERANCE_DB)


@pytest.mark.parametrize("perturb", [rb.as_pcm24, rb.as_float32])
def test_exact_reencodings_decode_to_the_same_samples(tmp_path, perturb):
    y = _band_limited_clip(0, LOUD_PEAK)
    original = _write_pcm16(tmp_path / "original.wav", y)
    reencoded = perturb(y, SAMPLE_RATE, np.random.default_rng(0)).write(tmp_path / "reencoded.wav")
    decoded = rb.decode_clips([original, reencoded], SAMPLE_RATE, 1.0)
    np.testing.assert_array_equal(decoded[1], decoded[0])


def test_random_perturbations_repeat_per_clip_and_differ_between_clips():
    y = _band_limited_clip(0, LOUD_PEAK)
    dither = rb.PERTURBATIONS[f"TPDF dither {rb.DITHER_LSB:g} LSB"]

    def run(clip):
        return dither(y, SAMPLE_RATE, rb.perturbation_rng(rb.DEFAULT_SEED, clip, 0)).samples

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))


# ---------------------------------------------------------------------------------------------
# Bookkeeping
# ---------------------------------------------------------------------------------------------
def test_flip_row_counts_label_changes_and_probability_moves():
    original = np.array([0.2, 0.6, 0.49, 0.51])
    perturbed = np.array([0.3, 0.4, 0.51, 0.52])
    labels = np.array([0.0, 1.0, 0.0, 1.0])
    row = rb.flip_row("x", original, perturbed, labels)
    assert (row["n"], row["flips"], row["accuracy"]) == (4, 2, 0.5)
    assert row["mean_abs_dp"] == pytest.approx(0.0825) and row["max_abs_dp"] == pytest.approx(0.2)
    assert rb.flip_row("original", original, None, labels)["accuracy"] == 1.0


def test_relative_change_is_zero_for_no_change_and_about_root_two_for_another_clip():
    rng = np.random.default_rng(0)
    clips, other = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8))
    assert rb.relative_change(clips, clips) == 0.0
    assert rb.relative_change(clips, other) == pytest.approx(np.sqrt(2.0), rel=0.05)


def test_mel_rows_split_at_2_khz_and_fmax_2000_leaves_one_group():
    from tfbreath.config import PipelineConfig, with_overrides

    pipeline = PipelineConfig()
    n_mels = pipeline.features.n_mels
    groups = rb.band_groups("mel", pipeline, n_mels)
    low, high = groups["<2k"], groups["2-4.5k"]
    np.testing.assert_array_equal(np.sort(np.concatenate([low, high])), np.arange(n_mels))
    centres = rb.band_centres("mel", pipeline)
    assert centres[low].max() < rb.BAND_EDGES_HZ[0] <= centres[high].min()
    narrow = with_overrides(pipeline, "features", fmax=rb.BAND_EDGES_HZ[0])
    assert set(rb.band_groups("mel", narrow, n_mels)) == {rb.ALL_ROWS, "<2k"}
    assert set(rb.band_groups("lpc", pipeline, pipeline.features.lpc_order)) == {rb.ALL_ROWS}


def test_band_limited_leaves_nothing_above_the_cutoff():
    y = breath_like(0)[np.newaxis]  # energy up to 8 kHz
    limited = rb.band_limited(y, SAMPLE_RATE, CONTENT_HZ)[0]
    spectrum = np.abs(np.fft.rfft(limited)) ** 2
    frequencies = np.fft.rfftfreq(limited.size, 1.0 / SAMPLE_RATE)
    above = spectrum[frequencies > rb.BAND_EDGES_HZ[0]].sum() / spectrum.sum()
    assert limited.shape == (SAMPLE_RATE,) and above < 1e-8


def _fake_kaggle(root, n: int):
    (root / "train").mkdir(parents=True)
    rows = ["ID,Target"]
    for i in range(n):
        clip_id = f"steth_20200101_00_00_{i:02d}_{'IE'[i % 2]}_001"
        _write_pcm16(root / "train" / f"steth_20200101_00_00_{i:02d}_001.wav", _band_limited_clip(i, LOUD_PEAK))
        rows.append(f"{clip_id},{'IE'[i % 2]}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def test_draw_clips_is_reproducible_and_refuses_more_than_there_are(tmp_path):
    root = _fake_kaggle(tmp_path / "data", 5)
    first, again = rb.draw_clips(root, 3, seed=7), rb.draw_clips(root, 3, seed=7)
    assert first.files == again.files and list(first.files) == sorted(first.files)
    assert [int(p.stem.split("_")[-2]) % 2 for p in first.files] == first.labels.astype(int).tolist()
    with pytest.raises(rb.RobustnessError, match="has only 5 labelled clips"):
        rb.draw_clips(root, 6, seed=7)


@pytest.mark.parametrize("argv, message", [
    (["--clips", "0"], "--clips must be >= 1"),
    (["--fmax", "2000"], "apply to --features only"),
    (["--band-limit", "100"], "--band-limit must be >="),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        rb.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == rb.EXIT_USAGE and message in err and err.count("\n") == 1


def test_a_data_folder_without_train_csv_is_one_line_error(tmp_path, capsys):
    assert rb.main(["--data", str(tmp_path)]) == rb.EXIT_USAGE
    err = capsys.readouterr().err
    assert "no train.csv" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# The feature graph after a resampling round trip (one batch, one trace)
# ---------------------------------------------------------------------------------------------
CASES = {"loud": (0, LOUD_PEAK), "quiet": (0, QUIET_PEAK), "other": (1, LOUD_PEAK)}
"""Synthetic clips by role: ``other`` is a different clip, the negative control."""


def _round_trip_changes(folder, pipeline) -> dict:
    """RMS change of every ``map/group`` of the model input, per (clip, rate): ``{(clip, rate): {key: change}}``.

    ``rate`` None is the ``other`` clip compared with ``loud`` (and real clip 1 with real clip 0).
    """
    clips = {name: _band_limited_clip(seed, peak) for name, (seed, peak) in CASES.items()}
    if BREATH_PRESENT:
        clips.update({f"real{i}": rb.read_pcm16(path)[0] for i, path in enumerate(real_clips(2))})
    paths, keys = [], []
    for name, y in clips.items():
        paths.append(_write_pcm16(folder / f"{name}.wav", y))
        keys.append((name, SAMPLE_RATE))
        for rate in RESAMPLED:
            paths.append(rb.resampled(rate)(y, SAMPLE_RATE, None).write(folder / f"{name}_{rate}.wav"))
            keys.append((name, rate))
    features = rb.extract(rb.feature_model(pipeline), rb.decode_clips(paths, SAMPLE_RATE, 1.0), len(paths))
    index = {key: i for i, key in enumerate(keys)}
    pairs = {(name, rate): (index[(name, SAMPLE_RATE)], index[(name, rate)]) for name in clips for rate in RESAMPLED}
    pairs[("loud", None)] = (index[("loud", SAMPLE_RATE)], index[("other", SAMPLE_RATE)])
    if BREATH_PRESENT:
        pairs[("real0", None)] = (index[("real0", SAMPLE_RATE)], index[("real1", SAMPLE_RATE)])
    changes = {pair: {} for pair in pairs}
    for channel, (name, n_rows) in enumerate(rb.map_bands(pipeline).items()):
        cells = rb.map_rows(features, channel)  # [N, n_mels, T]
        for group, rows in rb.band_groups(name, pipeline, n_rows).items():
            for pair, (a, b) in pairs.items():
                changes[pair][f"{name}/{group}"] = float(np.sqrt(np.mean(np.square(cells[b, rows] - cells[a, rows]))))
    return changes


@pytest.fixture(scope="module")
def round_trip_changes(tmp_path_factory):
    """``_round_trip_changes`` of the full-band front end (the default pipeline)."""
    from tfbreath.config import PipelineConfig

    return _round_trip_changes(tmp_path_factory.mktemp("round_trip"), PipelineConfig())


@pytest.fixture(scope="module")
def band_limited_round_trip_changes(tmp_path_factory):
    """``_round_trip_changes`` with ``[features] band_limit_hz = BAND_LIMIT_HZ``."""
    from tfbreath.config import PipelineConfig, with_overrides

    pipeline = with_overrides(PipelineConfig(), "features", band_limit_hz=BAND_LIMIT_HZ)
    return _round_trip_changes(tmp_path_factory.mktemp("band_limited_round_trip"), pipeline)


def _too_far(changes: dict[str, float], tolerance: dict[str, float]) -> dict[str, float]:
    return {key: round(changes[key], 4) for key, limit in tolerance.items() if changes[key] > limit}


def _not_far_enough(changes: dict[str, float], tolerance: dict[str, float]) -> dict[str, float]:
    return {key: round(changes[key], 4) for key, limit in tolerance.items() if changes[key] < OTHER_CLIP_MARGIN * limit}


@pytest.mark.parametrize("rate", RESAMPLED)
def test_band_limited_clip_keeps_its_maps_through_a_resampling_round_trip(round_trip_changes, rate):
    assert not _too_far(round_trip_changes[("loud", rate)], SYNTHETIC_TOLERANCE)
    assert not _not_far_enough(round_trip_changes[("loud", None)], SYNTHETIC_TOLERANCE)


@needs_breath
@pytest.mark.parametrize("rate", RESAMPLED)
def test_real_clips_keep_their_maps_below_2_khz_through_a_resampling_round_trip(round_trip_changes, rate):
    for clip in ("real0", "real1"):
        assert not _too_far(round_trip_changes[(clip, rate)], REAL_TOLERANCE), clip
    assert not _not_far_enough(round_trip_changes[("real0", None)], REAL_TOLERANCE)


@pytest.mark.parametrize("rate", RESAMPLED)
def test_band_limited_front_end_keeps_every_map_through_a_resampling_round_trip(band_limited_round_trip_changes,
                                                                                rate):
    """What issue 19 asks of every map, on a loud clip and real ones; a quiet clip keeps them
    within the 16-bit requantisation the round trip adds in its passband."""
    clips = ("loud", "real0", "real1") if BREATH_PRESENT else ("loud",)
    for clip in clips:
        changes = band_limited_round_trip_changes[(clip, rate)]
        assert not _too_far(changes, dict.fromkeys(changes, ANY_MAP_TOLERANCE)), clip
    quiet = band_limited_round_trip_changes[("quiet", rate)]
    assert not _too_far(quiet, dict.fromkeys(quiet, QUIET_MAP_TOLERANCE))
    assert not _not_far_enough(band_limited_round_trip_changes[("loud", None)], SYNTHETIC_TOLERANCE)


@pytest.mark.parametrize("rate", RESAMPLED)
def test_full_band_front_end_loses_some_map_through_a_resampling_round_trip(round_trip_changes, rate):
    """The reason for ``band_limit_hz``: without it the LPC map of even a loud clip follows the
    empty 2-8 kHz band, and the upper mel bands, tempogram and MFCC of a quiet one."""
    for clip in ("loud", "quiet"):
        changes = round_trip_changes[(clip, rate)]
        assert _too_far(changes, dict.fromkeys(changes, QUIET_MAP_TOLERANCE)), clip
