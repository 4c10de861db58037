"""The rbf member (``tfbreath.models.rbf``): known answers of the kernel layer, its config and
``.keras`` round trip, mixed precision, and the closed-form fit (``train.fit_closed_form``)
against scikit-learn's own Nyström + logistic regression on the same statistics."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest

from tfbreath import train
from tfbreath.config import ConfigError, PipelineConfig, TrainConfig, with_overrides
from tfbreath.models import build_model_for_pipeline
from tfbreath.models.pooled import POOLED_NORM, POOLED_STATS
from tfbreath.models.rbf import RBF_KERNEL, RBFKernel, build_rbf
from tfbreath.precision import global_policy

from conftest import closed_form_fit_view, fitted_closed_form

SHAPE = (8, 6, 2)  # [M, T, C]
MAPS, ROWS = ("mel", "lpc"), (8, 4)
N_SCALARS = 3
LANDMARKS = 4


def _layer(landmarks: np.ndarray, gamma: float) -> RBFKernel:
    layer = RBFKernel(len(landmarks), gamma)
    layer.build((None, landmarks.shape[1]))
    layer.set_weights([landmarks.astype(np.float32)])
    return layer


def test_kernel_is_one_at_a_landmark_and_exp_of_minus_gamma_d2_elsewhere():
    landmarks = np.array([[0.0, 0.0], [3.0, 4.0]])
    z = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], np.float32)
    got = np.asarray(_layer(landmarks, 0.1)(z))  # [3, 2]
    want = np.exp(-0.1 * np.array([[0.0, 25.0], [25.0, 0.0], [1.0, 18.0]]))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_kernel_matches_scikit_learn_on_random_points():
    from sklearn.metrics.pairwise import rbf_kernel

    rng = np.random.default_rng(0)
    landmarks, z = rng.standard_normal((7, 30)), rng.standard_normal((5, 30))
    np.testing.assert_allclose(np.asarray(_layer(landmarks, 0.05)(z.astype(np.float32))),
                               rbf_kernel(z, landmarks, gamma=0.05), rtol=1e-4, atol=1e-6)


FAR_SCALE = 100.0
"""Spread of points far from the origin: |z|^2 ~ 1e6, where the expanded squared distance of a
point to itself rounds to about +-0.1 in float32."""
FAR_POINTS, FAR_DIMS = 32, 64


def test_kernel_never_exceeds_one_when_round_off_makes_a_distance_negative():
    """The expanded |z|^2 - 2 z.l + |l|^2 of a point to itself is not exactly 0 (either sign); floored
    at 0, no similarity exceeds 1 (exp of a negative distance would)."""
    points = np.random.default_rng(2).normal(0.0, FAR_SCALE, (FAR_POINTS, FAR_DIMS)).astype(np.float32)
    got = np.asarray(_layer(points, 1.0)(points))  # [L, L]
    assert got.max() <= 1.0


def test_landmarks_are_not_trainable():
    """The fit sets them in closed form; gradient steps (or a fine-tune) must not move them."""
    layer = _layer(np.zeros((LANDMARKS, 2)), 1.0)
    assert layer.trainable_weights == [] and [w.name for w in layer.non_trainable_weights] == ["landmarks"]


@pytest.mark.parametrize("kwargs, message", [({"n_landmarks": 0, "gamma": 1.0}, "n_landmarks must be > 0, got 0"),
                                             ({"n_landmarks": 3, "gamma": -1.0}, "gamma must be > 0, got -1.0"),
                                             ({"n_landmarks": 3, "gamma": 0.0}, "gamma must be > 0, got 0.0"),
                                             ({"n_landmarks": 3, "gamma": float("nan")}, "gamma must be > 0, got nan")])
def test_bad_layer_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RBFKernel(**kwargs)


def test_config_mirrors_init_and_the_model_round_trips_through_a_keras_file(tmp_path):
    layer = RBFKernel(LANDMARKS, 0.25, name="k")
    assert {k: layer.get_config()[k] for k in ("n_landmarks", "gamma", "name")} == \
        {"n_landmarks": LANDMARKS, "gamma": 0.25, "name": "k"}
    model = build_rbf(SHAPE, N_SCALARS, maps=MAPS, map_rows=ROWS, n_landmarks=LANDMARKS, gamma=0.05)
    rng = np.random.default_rng(1)
    inputs = {"spectral": rng.standard_normal((6, *SHAPE)).astype(np.float32),
              "scalars": rng.standard_normal((6, N_SCALARS)).astype(np.float32)}
    stats = np.asarray(model.get_layer(POOLED_STATS)(inputs))  # [6, D]
    train.set_standardisation(model.get_layer(POOLED_NORM), stats)
    z = np.asarray(model.get_layer(POOLED_NORM)(stats))
    model.get_layer(RBF_KERNEL).set_weights([z[:LANDMARKS]])  # landmarks among the clips: similarities not ~0
    model.get_layer("logit").set_weights([rng.standard_normal((LANDMARKS, 1)).astype(np.float32), np.zeros(1, np.float32)])
    model.save(tmp_path / "rbf.keras")
    again = keras.models.load_model(tmp_path / "rbf.keras")
    assert again.get_layer(RBF_KERNEL).gamma == 0.05
    want = model.predict(inputs, verbose=0)
    assert np.ptp(want) > 0.1  # the clips' logits differ
    np.testing.assert_allclose(again.predict(inputs, verbose=0), want, rtol=1e-5, atol=1e-6)


def test_untrained_logit_is_zero_and_float32_under_mixed_bfloat16():
    with global_policy("mixed_bfloat16"):
        model = build_rbf(SHAPE, N_SCALARS, maps=MAPS, map_rows=ROWS, n_landmarks=LANDMARKS)
    out = model({"spectral": np.ones((2, *SHAPE), np.float32), "scalars": np.ones((2, N_SCALARS), np.float32)})
    assert out.dtype == "float32" and model.get_layer(RBF_KERNEL).compute_dtype == "float32"
    np.testing.assert_array_equal(np.asarray(out), 0.0)


def test_config_keys_are_validated_with_the_bad_value():
    with pytest.raises(ConfigError, match="rbf_c must be > 0, got 0"):
        TrainConfig(rbf_c=(1.0, 0))
    with pytest.raises(ConfigError, match="rbf_landmarks must be > 0, got 0"):
        TrainConfig(rbf_landmarks=0)


RBF = with_overrides(with_overrides(PipelineConfig(name="rbf"), "train", models=("rbf",), rbf_c=(1.0, 100.0),
                                    rbf_landmarks=12, precision="float32"), "data", batch_size=8)
RBF = with_overrides(RBF, "features", maps=("mel", "modulation"), scalars=False)
"""Two maps, no scalars, fewer landmarks than training clips: a fast trace."""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fitted_closed_form("rbf", RBF, tmp_path_factory)


def test_fit_scores_every_c_and_separates_the_classes(fitted):
    model, _, val_set, out = fitted
    with open(out / "history_rbf.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["c"]) for r in rows] == list(RBF.train.rbf_c)
    assert model.get_layer(RBF_KERNEL).n_landmarks == RBF.train.rbf_landmarks
    p = train.predict_probabilities(model, val_set, 8)
    assert np.mean((p >= 0.5) == (val_set.kept_examples.labels == 1)) >= 0.9


def test_keras_member_gives_scikit_learns_probabilities(fitted):
    """The model's landmarks and folded weights reproduce Nyström + logistic regression fitted by
    scikit-learn on the same standardised statistics (training and validation clips, as the fit)."""
    model, train_set, val_set, out = fitted
    z, labels, feeds = closed_form_fit_view(model, train_set, val_set)
    c = train.best_c(out / "history_rbf.csv")
    want = train.CLOSED_FORM_FITS["rbf"][0](z, labels, c, RBF.train, RBF.data.seed).probability(z)
    np.testing.assert_allclose(feeds, want, atol=1e-4)
    assert not np.allclose(want, want.mean(), atol=1e-2)  # a real fit, not a constant


def test_kernel_width_is_scikit_learns_scale_of_the_statistics_it_was_fitted_on(fitted):
    """gamma = 1 / (D var(z)), scikit-learn's ``gamma="scale"``, of the standardised statistics of the
    fit's clips (the check above fits with the member's own learner, so it cannot see gamma)."""
    model, train_set, val_set, _ = fitted
    z, _, _ = closed_form_fit_view(model, train_set, val_set)
    assert model.get_layer(RBF_KERNEL).gamma == pytest.approx(1.0 / (z.shape[1] * z.var()), rel=1e-4)


def test_saved_member_reloads_with_the_same_outputs_and_is_not_fitted_again(fitted, capsys):
    model, train_set, val_set, out = fitted
    again = train.fit_closed_form("rbf", RBF, train_set, val_set, out)
    assert "already fitted" in capsys.readouterr().out
    np.testing.assert_allclose(train.predict_probabilities(again, val_set, 8),
                               train.predict_probabilities(model, val_set, 8), atol=1e-6)


def test_a_refit_uses_every_clip_up_to_the_landmark_count(fitted, tmp_path):
    _, train_set, _, _ = fitted
    few = with_overrides(RBF, "train", rbf_landmarks=1000)
    model = train.fit_closed_form("rbf", few, train_set, None, tmp_path, c=1.0)
    assert not (tmp_path / "history_rbf.csv").exists()
    assert model.get_layer(RBF_KERNEL).n_landmarks == len(train_set.kept_examples.labels)


def test_pipeline_builds_it_with_the_maps_own_rows():
    model = build_model_for_pipeline("rbf", PipelineConfig(), n_landmarks=LANDMARKS)
    assert model.get_layer(POOLED_STATS).map_rows == [128, 128, 128, 120, 24, 64, 40, 128, 12]
    assert model.get_layer(RBF_KERNEL).landmarks.shape == (LANDMARKS, model.get_layer(POOLED_NORM).mean.shape[-1])
