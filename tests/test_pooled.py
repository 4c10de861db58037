"""The pooled member (``tfbreath.models.pooled``): known answers of the statistics, a NumPy
reference on random maps, ``ds.map`` == direct call, mixed precision, the closed-form fit and
its ``.keras`` round trip."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfbreath import train
from tfbreath.config import PipelineConfig, with_overrides
from tfbreath.models import build_model_for_pipeline
from tfbreath.models.pooled import (MAX_GROUPS, MODULATION_BLOCK, POOLED_NORM, POOLED_STATS, STATISTICS,
                                    PooledStatistics, band_groups, build_pooled, gradient_safe_sqrt, legendre_basis,
                                    statistic_names)
from tfbreath.precision import global_policy

from conftest import closed_form_fit_view, fitted_closed_form

MAPS = ("mel", "modulation", "lpc")
ROWS = (70, 40, 12)
SHAPE = (72, 10, 3)  # [M, T, C]: mel padded 70 -> 72, modulation 40, lpc 12 of 72 rows
N_SCALARS = 4
ATOL = 1e-5


def _layer() -> PooledStatistics:
    return PooledStatistics(MAPS, ROWS)


def _inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"spectral": rng.standard_normal((n, *SHAPE)).astype(np.float32),
            "scalars": rng.standard_normal((n, N_SCALARS)).astype(np.float32)}


def _numpy_statistics(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The same statistics written out with loops. ``[N, D]``"""
    columns = []
    frames = SHAPE[1]
    t = np.linspace(-1.0, 1.0, frames)
    p2 = 1.5 * t ** 2 - 0.5
    p2 -= p2.mean()
    for channel, (name, rows) in enumerate(zip(MAPS, ROWS)):
        x = inputs["spectral"][..., channel].astype(np.float64)  # [N, M, T]
        if name == "modulation":
            columns.append(x[:, :MODULATION_BLOCK, :MODULATION_BLOCK].reshape(len(x), -1))
            continue
        size = -(-rows // MAX_GROUPS)
        for start in range(0, rows, size):
            series = x[:, start:min(start + size, rows)].mean(axis=1)  # [N, T]
            columns += [series.mean(-1, keepdims=True), series.std(-1, keepdims=True),
                        series @ (t / np.linalg.norm(t))[:, None], series @ (p2 / np.linalg.norm(p2))[:, None]]
    return np.concatenate([*columns, inputs["scalars"]], axis=1)


def test_band_groups_cover_the_own_rows_once_in_at_most_max_groups():
    for rows in (12, 24, 40, 64, 70, 120, 128):
        groups = band_groups(rows)
        assert len(groups) <= MAX_GROUPS and groups[0][0] == 0 and groups[-1][1] == rows
        assert all(stop == start for (_, stop), (start, _) in zip(groups, groups[1:]))


def test_statistics_match_a_numpy_reference_and_name_every_column():
    inputs = _inputs(3)
    got = _layer()(inputs).numpy()
    want = _numpy_statistics(inputs)
    np.testing.assert_allclose(got, want, atol=ATOL)
    assert len(statistic_names(MAPS, ROWS, ["s"] * N_SCALARS)) == got.shape[1]


QUEFRENCY_STEP = 100.0
"""Modulation cell (q, m) holds QUEFRENCY_STEP * q + m in the naming test: every cell distinct."""
SCALAR_NAMES = tuple(f"s{i}" for i in range(N_SCALARS))


def test_every_column_is_named_for_what_it_holds():
    """``statistic_names`` labels the layer's columns (e.g. to read a fitted member's weights): band r
    of mel is r and of lpc -r at every frame, modulation cell (q, m) is 100 q + m, scalar i is i."""
    bands = np.arange(SHAPE[0], dtype=np.float32)[:, None]  # [M, 1]
    q, m = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")  # [M, T] each
    spectral = np.stack([np.broadcast_to(bands, SHAPE[:2]), QUEFRENCY_STEP * q + m,
                         np.broadcast_to(-bands, SHAPE[:2])], axis=-1)[None].astype(np.float32)
    scalars = np.arange(N_SCALARS, dtype=np.float32)[None]
    values = _layer()({"spectral": spectral, "scalars": scalars}).numpy()[0]
    columns = dict(zip(statistic_names(MAPS, ROWS, SCALAR_NAMES), values, strict=True))
    for name, sign in (("mel", 1.0), ("lpc", -1.0)):
        for start, stop in band_groups(ROWS[MAPS.index(name)]):
            assert columns[f"{name}_b{start}-{stop}_mean"] == pytest.approx(sign * bands[start:stop].mean())
            for stat in STATISTICS[1:]:  # constant in time
                assert columns[f"{name}_b{start}-{stop}_{stat}"] == pytest.approx(0.0, abs=ATOL)
    for i in range(MODULATION_BLOCK):
        for j in range(MODULATION_BLOCK):
            assert columns[f"modulation_q{i}_m{j}"] == QUEFRENCY_STEP * i + j
    assert [columns[s] for s in SCALAR_NAMES] == list(scalars[0])


FULL_BANDS = 128


def test_a_full_map_gives_max_groups_of_four_bands():
    """128 bands in the 32 groups the saved members were fitted on, named as in the module docstring."""
    names = statistic_names(["mel"], [FULL_BANDS], [])
    assert len(names) == MAX_GROUPS * len(STATISTICS) == FULL_BANDS
    assert names[:len(STATISTICS)] == [f"mel_b0-4_{stat}" for stat in STATISTICS]


def test_known_answers_constant_ramp_and_parabola_in_time():
    t = np.linspace(-1.0, 1.0, SHAPE[1]).astype(np.float32)
    basis = legendre_basis(SHAPE[1])
    for series, want in ((np.full_like(t, 2.0), (2.0, 0.0, 0.0, 0.0)),
                         (t, (0.0, t.std(), np.linalg.norm(t), 0.0)),
                         (t ** 2, (np.mean(t ** 2), (t ** 2).std(), 0.0, float(t ** 2 @ basis[1])))):
        spectral = np.broadcast_to(series, (1, *SHAPE[:2])).copy()  # every band the same series
        inputs = {"spectral": np.repeat(spectral[..., None], 3, axis=-1), "scalars": np.zeros((1, N_SCALARS), np.float32)}
        first_group = _layer()(inputs).numpy()[0, :len(STATISTICS)]
        np.testing.assert_allclose(first_group, want, atol=ATOL)


def test_a_band_constant_in_time_leaves_every_gradient_finite():
    """A constant band's std is sqrt(0): its gradient must not turn the whole map's into NaN."""
    x = np.array([0.0, 1e-30, 2.0], np.float32)
    with tf.GradientTape() as tape:
        xs = tf.constant(x)
        tape.watch(xs)
        roots = gradient_safe_sqrt(xs)
    np.testing.assert_array_equal(roots.numpy(), np.sqrt(x))
    assert tape.gradient(roots, xs).numpy()[0] == 0.0
    inputs = {key: tf.constant(value) for key, value in _inputs(1).items()}
    inputs["spectral"] = tf.concat([tf.fill([1, 3, SHAPE[1], SHAPE[2]], 1.5), inputs["spectral"][:, 3:]], axis=1)
    with tf.GradientTape() as tape:
        tape.watch(inputs["spectral"])
        total = tf.reduce_sum(_layer()(inputs))
    gradient = tape.gradient(total, inputs["spectral"]).numpy()
    assert np.isfinite(gradient).all() and np.abs(gradient[..., 0]).sum() > 0


def test_padding_rows_are_never_read():
    inputs = _inputs(2)
    changed = {key: value.copy() for key, value in inputs.items()}
    changed["spectral"][:, ROWS[0]:, :, 0] = 1e6  # mel's padding rows
    changed["spectral"][:, ROWS[2]:, :, 2] = -1e6  # lpc's
    np.testing.assert_array_equal(_layer()(changed).numpy(), _layer()(inputs).numpy())


def test_direct_call_equals_inside_dataset_map():
    inputs = _inputs(4)
    layer = _layer()
    mapped = tf.data.Dataset.from_tensor_slices(inputs).batch(2).map(layer)
    np.testing.assert_allclose(np.concatenate([b.numpy() for b in mapped]), layer(inputs).numpy(), atol=ATOL)


def test_untrained_member_says_one_half_and_stays_float32_under_bfloat16():
    inputs = _inputs(2)
    with global_policy("mixed_bfloat16"):
        model = build_pooled(SHAPE, N_SCALARS, maps=MAPS, map_rows=ROWS)
        out = model(inputs)
        stats = model.get_layer(POOLED_STATS)(inputs)
    assert out.dtype == tf.float32 and stats.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), 0.0)
    np.testing.assert_allclose(stats.numpy(), _numpy_statistics(inputs), atol=ATOL)


RAW_LEVEL = 1000.0
"""Scalars near 1000: bfloat16 keeps 8 bits, so it would round them by up to 4 before centring."""


def test_standardisation_runs_in_float32_under_mixed_bfloat16():
    inputs = _inputs(8)
    inputs["scalars"] = RAW_LEVEL + inputs["scalars"]
    logits = []
    for policy in ("float32", "mixed_bfloat16"):
        with global_policy(policy):
            model = build_pooled(SHAPE, N_SCALARS, maps=MAPS, map_rows=ROWS)
        train.set_standardisation(model.get_layer(POOLED_NORM), model.get_layer(POOLED_STATS)(inputs).numpy())
        kernel, bias = model.get_layer("logit").get_weights()
        model.get_layer("logit").set_weights([np.ones_like(kernel), bias])
        logits.append(model(inputs).numpy())
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-5, atol=1e-4)


def test_a_single_scalar_is_an_input():
    model = build_pooled(SHAPE, 1, maps=MAPS, map_rows=ROWS)
    assert sorted(t.name for t in model.inputs) == ["scalars", "spectral"]


def test_a_map_name_per_channel_is_required():
    with pytest.raises(ValueError, match="one name per map channel: 3 channels, 2 names"):
        build_pooled(SHAPE, N_SCALARS, maps=MAPS[:2], map_rows=ROWS[:2])


POOLED = with_overrides(with_overrides(PipelineConfig(name="pooled"), "train", models=("pooled",),
                                       pooled_c=(1e-3, 1.0), precision="float32"), "data", batch_size=8)
POOLED = with_overrides(POOLED, "features", maps=("mel", "modulation"), scalars=False)
"""Two maps, no scalars: a fast trace (the statistics of every map and of the scalars are checked above)."""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fitted_closed_form("pooled", POOLED, tmp_path_factory)


def test_fit_scores_every_c_keeps_the_lowest_loss_and_separates_the_classes(fitted):
    model, _, val_set, out = fitted
    with open(out / "history_pooled.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["c"]) for r in rows] == list(POOLED.train.pooled_c)
    assert train.best_c(out / "history_pooled.csv") == float(min(rows, key=lambda r: float(r["val_loss"]))["c"])
    p = train.predict_probabilities(model, val_set, 8)
    assert np.mean((p >= 0.5) == (val_set.kept_examples.labels == 1)) >= 0.9


def test_the_member_is_the_fit_at_the_chosen_c_on_training_and_validation_clips(fitted):
    """The saved model gives what scikit-learn's logistic regression at the history's best C, fitted on
    the same standardised statistics of all its clips, gives; the other C of the grid does not."""
    model, train_set, val_set, out = fitted
    z, labels, feeds = closed_form_fit_view(model, train_set, val_set)
    best = train.best_c(out / "history_pooled.csv")
    fit = train.CLOSED_FORM_FITS["pooled"][0]
    for c in POOLED.train.pooled_c:
        want = fit(z, labels, c, POOLED.train, POOLED.data.seed).probability(z)
        assert np.allclose(feeds, want, atol=1e-4) is (c == best), c


def test_saved_member_reloads_with_the_same_outputs_and_is_not_fitted_again(fitted, capsys):
    model, train_set, val_set, out = fitted
    again = train.fit_closed_form("pooled", POOLED, train_set, val_set, out)
    assert "already fitted" in capsys.readouterr().out
    np.testing.assert_allclose(train.predict_probabilities(again, val_set, 8),
                               train.predict_probabilities(model, val_set, 8), atol=1e-6)


def test_a_refit_takes_c_and_refuses_neither_or_both(fitted, tmp_path):
    _, train_set, val_set, _ = fitted
    model = train.fit_closed_form("pooled", POOLED, train_set, None, tmp_path, c=1.0)
    assert not (tmp_path / "history_pooled.csv").exists()
    assert isinstance(model, keras.Model) and (tmp_path / "pooled.keras").is_file()
    for val, c in ((None, None), (val_set, 1.0)):
        with pytest.raises(ValueError, match="give val_set"):
            train.fit_closed_form("pooled", POOLED, train_set, val, tmp_path / "other", c=c)


def test_refit_setting_is_a_value_the_folds_tried():
    assert train.refit_setting("pooled", [0.01, 0.001, 0.1, 0.01]) == 0.01
    assert train.refit_setting("pooled", [1.0, 0.001]) == 0.001
    assert train.refit_setting("cnn8", [20, 21, 30]) == 21


def test_pipeline_builds_it_with_the_maps_own_rows():
    model = build_model_for_pipeline("pooled", PipelineConfig())
    layer = model.get_layer(POOLED_STATS)
    assert layer.maps == list(PipelineConfig().features.maps)
    assert layer.map_rows == [128, 128, 128, 120, 24, 64, 40, 128, 12]


ROUND_OFF_SPREAD = 1e-6
"""Spread of a statistic constant up to round-off, above float32's resolution at 1 (1.2e-7), so it
survives the cast to float32 that the layer sees (1e-9 would round away and prove nothing)."""
CENTRED_BOUND = 10 * ROUND_OFF_SPREAD
"""|z| of that statistic centred but not scaled: a few of its spreads (scaled, it would be O(1))."""


def test_constant_statistics_are_centred_not_scaled():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3)) * [1.0, 1.0, 10.0]
    x[:, 1] = 1.0 + ROUND_OFF_SPREAD * rng.standard_normal(50)  # a per-band z-scored band's std: 1 up to round-off
    norm = keras.layers.Normalization(axis=-1)
    norm.build((None, 3))
    train.set_standardisation(norm, x)
    z = norm(x.astype(np.float32)).numpy()
    assert np.abs(z[:, 1]).max() < CENTRED_BOUND
    np.testing.assert_allclose(z[:, [0, 2]].std(axis=0), 1.0, rtol=1e-4)


def test_a_modulation_map_with_fewer_rows_than_the_block_is_refused():
    """6 rows cannot give the 8 x 8 block; reshaping them anyway would mix clips of the batch."""
    with pytest.raises(ValueError, match="read the first 8 rows of modulation, which has 6"):
        PooledStatistics(["mel", "modulation"], [32, 6])
    PooledStatistics(["mel", "modulation"], [32, MODULATION_BLOCK])  # exactly the block: accepted
