"""Integrated-gradients explanations: completeness, known attributions, the CLI's files and errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import matplotlib.image
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from conftest import breath_like
from tfbreath import artifacts, classifier, explain, export, serving, synthetic
from tfbreath.config import SCALAR_NAMES, SCALARS, SPECTRAL, PipelineConfig, dump_config, with_overrides
from tfbreath.ensemble import build_ensemble
from tfbreath.errors import EXIT_USAGE
from tfbreath.models import build_model_for_pipeline
from tfbreath.precision import global_policy, is_float32

SMALL = with_overrides(PipelineConfig(), "features", maps=("mel", "mfcc", "chroma"))
"""A pipeline with few maps (and the scalars), so features and models stay cheap."""
RATE = SMALL.audio.sample_rate
CLIP = SMALL.audio.num_samples
SMALL_SHAPES = {SPECTRAL: (SMALL.features.n_mels, SMALL.num_frames, len(SMALL.features.maps)),
                SCALARS: (len(SCALAR_NAMES),)}

TINY_SHAPES = {SPECTRAL: (6, 5, 2), SCALARS: (3,)}
SMOOTH_STEPS = 256
"""Path points for the tiny smooth models: the midpoint rule's error is O(1/steps^2) there."""
SMOOTH_TOL = 1e-4
"""|sum of attributions - (f(x) - f(x'))| allowed on a smooth tiny model with ``SMOOTH_STEPS``."""
LINEAR_TOL = 1e-5
"""A linear model's attributions are exact, w * (x - x'), up to float32 round-off."""
SHIPPED_GAP_TOL = 0.1
"""|completeness gap| allowed on the shipped ensemble with ``explain.IG_STEPS`` (logit units).
Measured at most 0.003 on the synthetic clips of ``SHIPPED_CLIPS`` and their neighbours, at most
0.012 on 40 real clips; the previous refit left 0.042 - 0.072 and 0.062: a CNN8 member's gradient
along the path is piecewise constant, so the midpoint sum can converge slowly (``explain.IG_STEPS``)."""
TFLITE_ATOL = export.MAX_PROBABILITY_DIFF["none"]
"""explain's P(exhale) (the Keras ensemble) and predict's default (its TFLite export) on one file."""
CLI_STEPS = "8"
"""Path points in CLI tests: they check files and messages, not accuracy."""
MIN_PNG_PIXELS = 400
"""A figure of nine maps is well over this many pixels a side."""


def _run(capsys, *argv):
    """``explain.main`` in-process: ``(exit code, stderr lines)``; argparse errors exit."""
    try:
        code = explain.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def _wav(path, audio, rate=RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="PCM_16")
    return path


def _synthetic(phase: str, seed: int) -> np.ndarray:
    return synthetic.synthetic_clip(phase, np.random.default_rng(seed), RATE, CLIP, 0.0, -10.0)


def _inputs(shapes, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def _tiny_inputs():
    return {name: keras.Input(shape, name=name) for name, shape in TINY_SHAPES.items()}


def _linear_model(weights):
    """f = sum(w_spectral * spectral) + w_scalars . scalars + 0.3, a logit ``[B, 1]``."""
    inputs = _tiny_inputs()
    flat = keras.layers.Concatenate()([keras.layers.Flatten()(inputs[SPECTRAL]), inputs[SCALARS]])
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(flat))
    kernel = np.concatenate([weights[SPECTRAL].reshape(-1), weights[SCALARS]])[:, np.newaxis]
    dense.set_weights([kernel, np.array([0.3], np.float32)])
    return model


def _smooth_model(seed):
    """A tiny nonlinear two-input model (conv, tanh, pooling, dense) with a logit ``[B, 1]``."""
    keras.utils.set_random_seed(seed)
    inputs = _tiny_inputs()
    image = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="tanh")(inputs[SPECTRAL]))
    scalars = keras.layers.Dense(4, activation="tanh")(inputs[SCALARS])
    hidden = keras.layers.Dense(4, activation="tanh")(keras.layers.Concatenate()([image, scalars]))
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def _total(attributions):
    return sum(float(np.sum(a, dtype=np.float64)) for a in attributions.values())


def _target_at(target, example):
    return float(target({name: value[np.newaxis] for name, value in example.items()})[0])


# ---------------------------------------------------------------------------------------------
# Integrated gradients on tiny models
# ---------------------------------------------------------------------------------------------
def test_linear_model_attributions_are_weight_times_difference():
    weights, x, x0 = _inputs(TINY_SHAPES, 0), _inputs(TINY_SHAPES, 1), _inputs(TINY_SHAPES, 2)
    attributions = explain.IntegratedGradients(explain.logit_target(_linear_model(weights)), steps=3)(x, x0)
    for name in TINY_SHAPES:
        np.testing.assert_allclose(attributions[name], weights[name] * (x[name] - x0[name]), atol=LINEAR_TOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_completeness_on_a_smooth_model(seed):
    target = explain.logit_target(_smooth_model(seed))
    x, x0 = _inputs(TINY_SHAPES, 10 + seed), _inputs(TINY_SHAPES, 20 + seed)
    attributions = explain.IntegratedGradients(target, SMOOTH_STEPS, batch=100)(x, x0)  # batches of 100, 100, 56
    assert {name: a.shape for name, a in attributions.items()} == TINY_SHAPES
    difference = _target_at(target, x) - _target_at(target, x0)
    assert abs(difference) > 10 * SMOOTH_TOL  # a test that can fail
    assert abs(_total(attributions) - difference) < SMOOTH_TOL


def test_ensemble_target_is_the_logit_of_its_probability_and_is_complete():
    members = {"a": _smooth_model(0), "b": _smooth_model(1)}
    ensemble = build_ensemble(members, [0.3, 0.7])
    target = explain.logit_target(ensemble)
    batch = {name: np.stack([_inputs(TINY_SHAPES, s)[name] for s in range(4)]) for name in TINY_SHAPES}
    np.testing.assert_allclose(tf.sigmoid(target(batch)).numpy(), ensemble(batch).numpy().reshape(-1), atol=1e-6)
    x, x0 = _inputs(TINY_SHAPES, 5), _inputs(TINY_SHAPES, 6)
    attributions = explain.IntegratedGradients(target, SMOOTH_STEPS)(x, x0)
    assert abs(_total(attributions) - (_target_at(target, x) - _target_at(target, x0))) < SMOOTH_TOL


def test_ensemble_logit_stays_finite_when_members_are_certain():
    inputs = _tiny_inputs()
    logits = [keras.layers.Dense(1)(keras.layers.Flatten()(inputs[SPECTRAL])) for _ in range(2)]
    members = {f"m{k}": keras.Model(inputs, logit) for k, logit in enumerate(logits)}
    n_cells = int(np.prod(TINY_SHAPES[SPECTRAL]))
    for k, model in enumerate(members.values()):
        model.layers[-1].set_weights([np.full((n_cells, 1), k + 1.0, np.float32), np.zeros(1, np.float32)])
    ensemble = build_ensemble(members, [0.5, 0.5])
    certain = {SPECTRAL: np.ones((1, *TINY_SHAPES[SPECTRAL]), np.float32), SCALARS: np.zeros((1, 3), np.float32)}
    assert ensemble(certain).numpy().item() == 1.0  # logits 60 and 120: the probability saturates in float32 ...
    # ... its logit does not: 1 - P = (sigmoid(-60) + sigmoid(-120)) / 2 ~ exp(-60) / 2
    assert explain.logit_target(ensemble)(certain).numpy().item() == pytest.approx(n_cells + np.log(2.0), rel=1e-5)


def test_an_input_the_model_does_not_read_gets_zero_attributions():
    inputs = _tiny_inputs()
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs[SPECTRAL])))  # scalars unread
    attributions = explain.IntegratedGradients(explain.logit_target(model), steps=3)(_inputs(TINY_SHAPES, 1),
                                                                                     _inputs(TINY_SHAPES, 2))
    assert not attributions[SCALARS].any() and attributions[SPECTRAL].any()


@pytest.mark.parametrize("logit, probability", [(-800.0, 0.0), (800.0, 1.0), (0.0, 0.5)])
def test_probability_of_any_logit(logit, probability):
    assert explain.Explanation("x", None, {}, {}, logit, 0.0).probability == probability


@pytest.mark.parametrize("masses, warned", [(0.95, False), (0.2, True)])
def test_attributions_that_miss_much_of_the_move_are_warned(masses, warned):
    explanation = explain.Explanation("c", Path("c.wav"), {}, {SCALARS: np.array([masses], np.float32)}, 1.5, 0.5)
    warning = explain.incomplete_warning(explanation)
    assert (warning is not None) == warned
    if warned:
        assert warning.startswith("warning: c.wav: the attributions miss -0.800 of the logit's move") and "\n" not in warning


def test_steps_must_be_positive():
    with pytest.raises(explain.ExplainError, match="steps must be >= 1, got 0"):
        explain.path_points(0)


# ---------------------------------------------------------------------------------------------
# The shipped model
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    return explain.load_explained(None)


def test_shipped_model_is_the_float32_feature_input_ensemble(shipped):
    assert serving.outputs_probability(shipped.model) and is_float32(shipped.model)
    assert shipped.map_names == ("mel", "mel_delta", "mel_delta2", "mfcc", "chroma", "gammatone", "modulation",
                                 "tempogram", "lpc")
    assert shipped.scalar_names == SCALAR_NAMES
    baseline = explain.baseline_features(shipped.model)
    assert not baseline[SPECTRAL].any() and baseline[SCALARS].any()  # scalars at the training mean


def test_the_pooled_members_baseline_is_the_scalar_mean_the_cnn_members_learnt():
    """The pooled member appends the raw scalars to its statistics: its baseline is the last 39
    entries of its normaliser's mean, which were adapted on the clips CNN8's scalar_norm saw."""
    baselines = {name: explain.baseline_features(explain.load_explained(classifier.DEFAULT_MODEL_DIR /
                                                                        f"{name}.keras").model)
                 for name in ("pooled", "cnn8")}
    np.testing.assert_allclose(baselines["pooled"][SCALARS], baselines["cnn8"][SCALARS], rtol=1e-4, atol=1e-7)


SHIPPED_CLIPS = {"I": 5, "E": 1}
"""Phase -> seed of the synthetic clips explained with the shipped model: the logit of each moves
by over 1 from the baseline (measured +1.62 and -2.28), so the completeness check can fail."""


@pytest.fixture(scope="module")
def shipped_explanations(shipped):
    ids = [f"synthetic_{phase}{seed}" for phase, seed in SHIPPED_CLIPS.items()]
    waveforms = np.stack([_synthetic(phase, seed) for phase, seed in SHIPPED_CLIPS.items()])
    return list(explain.explain_clips(shipped, ids, ids, waveforms))


def test_shipped_attributions_have_the_input_shapes(shipped, shipped_explanations):
    shapes = {name: (*x.shape[1:],) for name, x in shipped.model.input.items()}
    for explanation in shipped_explanations:
        assert {name: a.shape for name, a in explanation.attributions.items()} == shapes
        assert {name: f.shape for name, f in explanation.features.items()} == shapes
        by_map = [m for kind, m, _ in explain.masses(explanation, shipped).values() if kind == explain.MAP]
        assert all(np.isfinite(by_map)) and np.count_nonzero(by_map) == len(by_map)  # every map has a gradient


@pytest.mark.parametrize("clip", range(len(SHIPPED_CLIPS)))
def test_completeness_on_the_shipped_model(shipped_explanations, clip):
    explanation = shipped_explanations[clip]
    assert abs(explanation.logit - explanation.baseline_logit) > 10 * SHIPPED_GAP_TOL
    assert abs(explanation.total - (explanation.logit - explanation.baseline_logit)) < SHIPPED_GAP_TOL


def test_cli_on_the_shipped_model_writes_a_figure_and_masses(capsys, tmp_path, shipped):
    clip = _wav(tmp_path / "in" / "exhale_like.wav", _synthetic("E", 4))
    code, err = _run(capsys, clip, "--out", tmp_path / "out", "--steps", CLI_STEPS)
    assert code == explain.EXIT_OK, err
    png = matplotlib.image.imread(tmp_path / "out" / "exhale_like.png")
    assert min(png.shape[:2]) > MIN_PNG_PIXELS and png[..., :3].std() > 0.05
    result = json.loads((tmp_path / "out" / "exhale_like.json").read_text())
    assert tuple(result["maps"]) == shipped.map_names and tuple(result["scalars"]) == SCALAR_NAMES
    assert result["target"] == explain.TARGET and result["label"] in ("I", "E")
    shipped_tflite = classifier.load_classifier(None)  # what predict runs without --model: the exported ensemble
    expected = shipped_tflite(np.stack([classifier.window(a, 0, CLIP) for a in classifier.decode([clip], RATE)]))
    assert result["probability"] == pytest.approx(float(expected[0]), abs=TFLITE_ATOL)
    total = sum(m["mass"] for m in result["maps"].values()) + sum(result["scalars"].values())
    assert total == pytest.approx(result["attribution_total"], abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Models from fit and export
# ---------------------------------------------------------------------------------------------
def _fit_like(tmp_path, policy="float32"):
    """A width-0.125 CNN8 for ``SMALL`` saved as ``fit`` saves a member: with its pipeline."""
    keras.utils.set_random_seed(0)
    with global_policy(policy):
        model = build_model_for_pipeline("cnn8", SMALL, width=0.125)
    return model, artifacts.save_model(model, tmp_path / "cnn8.keras", dump_config(SMALL))


def test_cli_on_a_mixed_precision_keras_from_fit(capsys, tmp_path):
    _, path = _fit_like(tmp_path, "mixed_bfloat16")
    assert is_float32(explain.load_explained(path).model)  # gradients in float32
    clip = _wav(tmp_path / "clip.wav", breath_like(0))
    code, err = _run(capsys, "--model", path, clip, "--out", tmp_path / "out", "--steps", CLI_STEPS)
    assert code == explain.EXIT_OK, err
    result = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert tuple(result["maps"]) == SMALL.features.maps and tuple(result["scalars"]) == SCALAR_NAMES
    assert (tmp_path / "out" / "clip.png").stat().st_size > 0


def test_waveform_keras_is_explained_through_its_feature_model(tmp_path, capsys):
    member, _ = _fit_like(tmp_path)
    path = tmp_path / "cnn8_waveform.keras"
    artifacts.save_model(serving.waveform_model(member, SMALL), path)
    explained = explain.load_explained(path, pipeline_arg=tmp_path / "other.toml")
    assert set(explained.model.input) == {SPECTRAL, SCALARS} and explained.pipeline == SMALL
    assert f"note: {path} carries its own pipeline; --pipeline {tmp_path / 'other.toml'} is not used" in \
        capsys.readouterr().err  # said, not silently dropped
    features = serving.feature_model(SMALL).predict_on_batch(breath_like(1)[np.newaxis])
    np.testing.assert_allclose(explain.logit_target(explained.model)(features).numpy(),
                               member(features).numpy().reshape(-1), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# --summary
# ---------------------------------------------------------------------------------------------
CHOSEN_MAP, CHOSEN_SCALAR = 0, 5
"""The only map channel and scalar ``_reads_one_of_each`` looks at (map 0 of 3: a reversed channel
order would name another map)."""


def _reads_one_of_each(tmp_path):
    """A model whose logit depends on one map (a ReLU of it, averaged) and one scalar only."""
    inputs = {name: keras.Input(shape, name=name) for name, shape in SMALL_SHAPES.items()}
    conv = keras.layers.Conv2D(1, 1, activation="relu")
    image = keras.layers.GlobalAveragePooling2D()(conv(inputs[SPECTRAL]))  # [B, 1]
    scalar = keras.layers.Dense(1)
    logit = keras.layers.Add()([keras.layers.Dense(1)(image), scalar(inputs[SCALARS])])
    model = keras.Model(inputs, logit)
    kernel = np.zeros((1, 1, SMALL_SHAPES[SPECTRAL][-1], 1), np.float32)
    kernel[..., CHOSEN_MAP, 0] = 2.0
    conv.set_weights([kernel, np.zeros(1, np.float32)])
    scalar_kernel = np.zeros((len(SCALAR_NAMES), 1), np.float32)
    scalar_kernel[CHOSEN_SCALAR] = 1e-3
    scalar.set_weights([scalar_kernel, np.zeros(1, np.float32)])
    return artifacts.save_model(model, tmp_path / "one_of_each.keras", dump_config(SMALL))


def test_summary_ranks_the_only_inputs_the_model_reads_first(capsys, tmp_path):
    model = _reads_one_of_each(tmp_path)
    clips = [_wav(tmp_path / "in" / f"{phase}{seed}.wav", _synthetic(phase, seed)) for phase in "IE" for seed in (0, 1)]
    code, err = _run(capsys, "--model", model, tmp_path / "in", "--summary", "--out", tmp_path / "out",
                     "--steps", CLI_STEPS)
    assert code == explain.EXIT_OK, err
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        ranking = list(csv.DictReader(handle))
    assert {r["name"] for r in ranking[:2]} == {SMALL.features.maps[CHOSEN_MAP], SCALAR_NAMES[CHOSEN_SCALAR]}
    means = [float(r[explain.SUMMARY_KEY]) for r in ranking]
    assert means == sorted(means, reverse=True) and min(means[:2]) > 0 and max(means[2:]) == 0
    assert len(ranking) == len(SMALL.features.maps) + len(SCALAR_NAMES)
    with open(tmp_path / "out" / "clips.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(clips)
    for r in ranking[:2]:  # the ranking is the mean |mass| of the per-clip table
        assert float(r[explain.SUMMARY_KEY]) == pytest.approx(np.mean([abs(float(row[r["name"]])) for row in rows]),
                                                              rel=1e-5)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["clips"] == len(clips) and summary["ranking"][0]["name"] == ranking[0]["name"]
    counts = {label: sum(row["Target"] == label for row in rows) for label in explain.LABELS}
    for r in summary["ranking"][:2]:  # the overall mean is the label means weighted by their clips
        by_label = sum(counts[label] * (r["mean_mass_by_label"][label] or 0.0) for label in explain.LABELS)
        assert r["mean_mass"] == pytest.approx(by_label / len(clips), rel=1e-6)
    assert min(matplotlib.image.imread(tmp_path / "out" / "summary.png").shape[:2]) > MIN_PNG_PIXELS
    assert not list((tmp_path / "out").glob("I0.*"))  # no per-clip files in summary mode


# ---------------------------------------------------------------------------------------------
# Bad inputs: one line naming the file, exit code 2 (1 for a file that does not decode)
# ---------------------------------------------------------------------------------------------
def _one_error_line(err, *words):
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and all(word in errors[0] for word in words), err
    assert not any("Traceback" in line for line in err)


def test_missing_wav_is_an_error(capsys, tmp_path):
    missing = tmp_path / "nowhere.wav"
    code, err = _run(capsys, missing, "--out", tmp_path / "out")
    assert code == EXIT_USAGE
    _one_error_line(err, str(missing), "no such file")
    assert not (tmp_path / "out").exists()


def test_missing_model_is_an_error(capsys, tmp_path):
    missing = tmp_path / "no_model.keras"
    code, err = _run(capsys, "--model", missing, _wav(tmp_path / "c.wav", breath_like(0)), "--out", tmp_path / "out")
    assert code == EXIT_USAGE
    _one_error_line(err, str(missing), "no such model file")


def test_tflite_is_an_error_naming_it(capsys, tmp_path):
    tflite = classifier.DEFAULT_MODEL_DIR / "ensemble.tflite"
    code, err = _run(capsys, "--model", tflite, _wav(tmp_path / "c.wav", breath_like(0)), "--out", tmp_path / "out")
    assert code == EXIT_USAGE
    _one_error_line(err, str(tflite), "needs a feature-input Keras model")
    assert not (tmp_path / "out").exists()


def test_model_with_two_outputs_per_clip_is_an_error_naming_it(capsys, tmp_path):
    inputs = {name: keras.Input(shape, name=name) for name, shape in SMALL_SHAPES.items()}
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs[SCALARS]))
    path = artifacts.save_model(model, tmp_path / "two_outputs.keras", dump_config(SMALL))
    code, err = _run(capsys, "--model", path, _wav(tmp_path / "c.wav", breath_like(0)), "--out", tmp_path / "out")
    assert code == EXIT_USAGE
    _one_error_line(err, str(path), "one output per clip", "(None, 2)")
    assert not (tmp_path / "out").exists()


def test_model_without_feature_inputs_is_an_error_naming_it(capsys, tmp_path):
    waveform = keras.Input((CLIP,), name="waveform")
    model = keras.Model(waveform, keras.layers.Dense(1)(waveform))
    path = artifacts.save_model(model, tmp_path / "raw_audio.keras", dump_config(SMALL))
    code, err = _run(capsys, "--model", path, _wav(tmp_path / "c.wav", breath_like(0)), "--out", tmp_path / "out")
    assert code == EXIT_USAGE
    _one_error_line(err, str(path), "explain needs a Keras model taking", f"(None, {CLIP})")


def test_non_wav_file_is_skipped_naming_it(capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not audio\n")
    code, err = _run(capsys, text, "--out", tmp_path / "out")
    assert code == explain.EXIT_SKIPPED
    assert any(line.startswith("skipped ") and str(text) in line for line in err), err
    assert not (tmp_path / "out").exists()


def test_bad_steps_is_a_usage_error(capsys, tmp_path):
    code, err = _run(capsys, _wav(tmp_path / "c.wav", breath_like(0)), "--out", tmp_path / "out", "--steps", "0")
    assert code == EXIT_USAGE and err == ["error: --steps must be >= 1, got 0 (see --help)"]
