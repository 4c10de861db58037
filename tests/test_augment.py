"""CutMix / MixUp / masking batch augmentation (tfbreath.augment): invariants on constructed batches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfbreath.augment import (MASK_STREAM, AugmentationSchedule, AugmentConfig, Augmenter, cutmix,
                              cutmix_box, mask_maps, mixup, run_masks)
from tfbreath.config import ConfigError

B, H, W, C, S = 8, 10, 12, 3, 5


def indexed_batch(with_scalars: bool = True):
    """Sample i: every map pixel/channel = i, every scalar = 100 + i; labels alternate 0, 1."""
    idx = np.arange(B, dtype=np.float32)
    inputs = {"spectral": np.broadcast_to(idx[:, None, None, None], (B, H, W, C)).copy()}
    if with_scalars:
        inputs["scalars"] = np.broadcast_to(100 + idx[:, None], (B, S)).copy()
    labels = (np.arange(B) % 2).astype(np.float32)
    return inputs, labels


def onehot_batch():
    """Sample i: channel i of the map = 1 (others 0), scalar i = 1; labels alternate 0, 1."""
    eye = np.eye(B, dtype=np.float32)
    inputs = {"spectral": np.broadcast_to(eye[:, None, None, :], (B, 4, 4, B)).copy(),
              "scalars": eye.copy()}
    return inputs, (np.arange(B) % 2).astype(np.float32)


def numpy_out(result):
    inputs, labels = result
    return {k: v.numpy() for k, v in inputs.items()}, labels.numpy()


def classify(inputs, labels, out_inputs, out_labels) -> str:
    """Which augmentation an ``indexed_batch`` went through: 'cutmix', 'mixup' or 'none'."""
    spec = out_inputs["spectral"]
    if np.array_equal(spec, inputs["spectral"]) and np.array_equal(out_labels, labels):
        return "none"
    if np.array_equal(out_inputs["scalars"], inputs["scalars"]):
        return "cutmix"            # maps changed, scalars not (a full-map box keeps maps constant)
    assert all(np.ptp(spec[i]) == 0 for i in range(len(spec))), "scalars mixed but maps cut"
    return "mixup"


# ----------------------------------------------------------------------------- shapes, dtypes

@pytest.mark.parametrize("fn", [cutmix, mixup])
@pytest.mark.parametrize("with_scalars", [True, False])
def test_shapes_and_dtypes_preserved(fn, with_scalars):
    inputs, labels = indexed_batch(with_scalars)
    out, out_labels = fn(inputs, labels, 1.0, seed=1)
    assert set(out) == set(inputs)
    for key, value in inputs.items():
        assert out[key].shape == value.shape and out[key].dtype == tf.float32
    assert out_labels.shape == labels.shape and out_labels.dtype == tf.float32


@pytest.mark.parametrize("with_scalars", [True, False])
def test_augmenter_preserves_structure_in_dataset(with_scalars):
    inputs, labels = indexed_batch(with_scalars)
    aug = Augmenter(AugmentConfig(warmup_epochs=0), seed=0)
    ds = aug.apply(tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(3))  # last batch of 2
    spec = ds.element_spec
    assert set(spec[0]) == set(inputs)
    assert spec[0]["spectral"].shape.as_list() == [None, H, W, C]
    sizes = [out_labels.shape[0] for _, out_labels in ds]
    assert sizes == [3, 3, 2]


def test_unknown_input_keys_are_rejected():
    inputs, labels = indexed_batch()
    inputs["other"] = inputs["scalars"]
    with pytest.raises(ValueError, match="other"):
        mixup(inputs, labels, 0.2, seed=0)


# ----------------------------------------------------------------------------- MixUp

def test_mixup_uses_one_lambda_for_maps_scalars_and_labels():
    inputs, labels = onehot_batch()
    informative = 0
    for seed in range(20):
        out, out_labels = numpy_out(mixup(inputs, labels, 1.0, seed=seed))
        assert np.all((out_labels >= 0) & (out_labels <= 1))
        lambdas = []
        for i in range(B):
            mixed_map = out["spectral"][i, 0, 0]
            assert np.allclose(out["spectral"][i], mixed_map)          # still constant per sample
            partners = [j for j in range(B) if j != i and mixed_map[j] > 0]
            if not partners:                                           # partner is itself
                assert np.isclose(mixed_map[i], 1) and np.isclose(out_labels[i], labels[i])
                continue
            (p,) = partners
            lam = mixed_map[i]
            assert np.isclose(mixed_map[p], 1 - lam, atol=1e-6)
            np.testing.assert_allclose(out["scalars"][i], mixed_map, atol=1e-6)  # same lambda
            expected_label = lam * labels[i] + (1 - lam) * labels[p]
            assert np.isclose(out_labels[i], expected_label, atol=1e-6)
            lambdas.append(lam)
            informative += labels[i] != labels[p] and 0.01 < lam < 0.99
        assert np.ptp(lambdas) < 1e-6                                   # one lambda per batch
    assert informative >= 20                                            # the checks had teeth


def test_mixup_lambda_follows_beta_alpha():
    """Beta(0.2, 0.2) puts most mass near 0 and 1; Beta(1, 1) is uniform."""
    inputs, labels = onehot_batch()

    def lambdas(alpha):
        lams = []
        for seed in range(150):
            out, _ = numpy_out(mixup(inputs, labels, alpha, seed=seed))
            first = next((i for i in range(B) if out["spectral"][i, 0, 0, i] < 1 or
                         np.count_nonzero(out["spectral"][i, 0, 0]) > 1), None)  # not own partner
            # first is None: every sample unchanged, i.e. lam == 1
            lams.append(1.0 if first is None else out["spectral"][first, 0, 0, first])
        return np.array(lams)

    lam_02, lam_1 = lambdas(0.2), lambdas(1.0)
    extreme_02 = np.mean((lam_02 < 0.1) | (lam_02 > 0.9))     # P = 0.63 for Beta(0.2, 0.2)
    extreme_1 = np.mean((lam_1 < 0.1) | (lam_1 > 0.9))        # P = 0.2 for Beta(1, 1)
    assert extreme_02 > 0.5 and 0.08 < extreme_1 < 0.33, (extreme_02, extreme_1)


# ----------------------------------------------------------------------------- CutMix

def test_cutmix_label_weight_equals_pasted_area_and_scalars_unchanged():
    inputs, labels = indexed_batch()
    informative = touches_edge = 0
    for seed in range(30):
        out, out_labels = numpy_out(cutmix(inputs, labels, 1.0, seed=seed))
        np.testing.assert_array_equal(out["scalars"], inputs["scalars"])
        assert np.all((out_labels >= 0) & (out_labels <= 1))
        boxes = []
        for i in range(B):
            spec = out["spectral"][i]
            assert np.all(spec == spec[..., :1])                   # every channel has the same box
            pasted = spec[..., 0] != i
            values = np.unique(spec[..., 0][pasted])
            assert len(values) <= 1                                # one partner per sample
            fraction = pasted.mean()
            p = int(values[0]) if len(values) else i
            if p == i:
                assert np.isclose(out_labels[i], labels[i])
                continue
            boxes.append(pasted)
            expected = (1 - fraction) * labels[i] + fraction * labels[p]
            assert np.isclose(out_labels[i], expected, atol=1e-6), (seed, i, fraction)
            informative += labels[i] != labels[p] and 0 < fraction < 1
            touches_edge += bool(pasted[0].any() or pasted[-1].any() or pasted[:, 0].any()
                                 or pasted[:, -1].any())
        for pasted in boxes:                                       # one rectangular box per batch
            np.testing.assert_array_equal(pasted, boxes[0])
            rows, cols = np.flatnonzero(pasted.any(1)), np.flatnonzero(pasted.any(0))
            if rows.size:
                assert pasted.sum() == rows.size * cols.size
                assert np.ptp(rows) + 1 == rows.size and np.ptp(cols) + 1 == cols.size
    assert informative >= 30 and touches_edge >= 30                # clipped boxes were covered


def test_cutmix_box_is_clipped_to_the_map():
    """lam = 0.19 -> sides round(0.9 * 10) = 9, round(0.9 * 12) = 11; edge centres get clipped."""
    areas = []
    for seed in range(200):  # 1 in 30 centres leaves the box whole
        box = cutmix_box(tf.constant(H), tf.constant(W), tf.constant(0.19), tf.constant([seed, 1]))
        y1, y2, x1, x2 = (int(v) for v in box)
        assert 0 <= y1 < y2 <= H and 0 <= x1 < x2 <= W
        assert y2 - y1 <= 9 and x2 - x1 <= 11
        areas.append((y2 - y1) * (x2 - x1))
    assert min(areas) < 9 * 11 // 2                         # edges clip many boxes
    assert max(areas) == 9 * 11                             # an unclipped one has the sides themselves


# ----------------------------------------------------------------------------- probabilities

def run_batches(config: AugmentConfig, n: int, seed: int = 0) -> list[str]:
    inputs, labels = indexed_batch()
    aug = Augmenter(config, seed=seed)
    aug.enabled.assign(True)
    ds = aug.apply(tf.data.Dataset.from_tensors((inputs, labels)).repeat(n))
    return [classify(inputs, labels, *numpy_out(out)) for out in ds]


def test_branch_frequencies_match_probabilities():
    n = 400
    kinds = run_batches(AugmentConfig(p_cutmix=0.5, p_mixup=0.3, mixup_alpha=1.0), n)
    freq = {k: kinds.count(k) / n for k in ("cutmix", "mixup", "none")}
    # binomial sd <= 0.025 at n=400; 0.08 is > 3 sd
    assert abs(freq["cutmix"] - 0.5) < 0.08 and abs(freq["mixup"] - 0.3) < 0.08
    assert abs(freq["none"] - 0.2) < 0.08, freq


def test_default_recipe_always_augments():
    kinds = run_batches(AugmentConfig(mixup_alpha=1.0), 100, seed=1)  # alpha 1: every mix visible
    assert "none" not in kinds and {"cutmix", "mixup"} <= set(kinds)


@pytest.mark.parametrize("p_cutmix,p_mixup,expected", [(0.0, 0.0, {"none"}), (1.0, 0.0, {"cutmix"}),
                                                       (0.0, 1.0, {"mixup"})])
def test_degenerate_probabilities(p_cutmix, p_mixup, expected):
    kinds = run_batches(AugmentConfig(p_cutmix=p_cutmix, p_mixup=p_mixup, mixup_alpha=1.0), 40)
    assert set(kinds) == expected


# ----------------------------------------------------------------------------- seeding

N_BATCHES, N_EPOCHS = 6, 3


def epoch_outputs(aug: Augmenter, epochs) -> list[np.ndarray]:
    """Per epoch in ``epochs`` (set by the schedule), the ``[N_BATCHES, B, H, W, C]`` maps of
    ``aug.apply`` over N_BATCHES copies of one batch: they differ only through the seeds."""
    inputs, labels = indexed_batch()
    ds = aug.apply(tf.data.Dataset.from_tensors((inputs, labels)).repeat(N_BATCHES))
    schedule = AugmentationSchedule(aug)
    outputs = []
    for epoch in epochs:
        schedule.on_epoch_begin(epoch)
        outputs.append(np.stack([out["spectral"].numpy() for out, _ in ds]))
    return outputs


def seeded(seed: int | None) -> Augmenter:
    return Augmenter(AugmentConfig(warmup_epochs=0, mixup_alpha=1.0), seed=seed)


def test_parallel_apply_is_a_function_of_seed_epoch_and_step():
    """Through ``apply`` (parallel map): same seed, same epochs; seed, epoch and step all matter."""
    first = epoch_outputs(seeded(7), range(N_EPOCHS))
    again = epoch_outputs(seeded(7), range(N_EPOCHS))
    other = epoch_outputs(seeded(8), range(N_EPOCHS))
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(np.stack(first), np.stack(other))
    for epoch in range(1, N_EPOCHS):
        assert not np.array_equal(first[epoch], first[0]), epoch
    for batches in first:                                       # batch k is seeded by its step k
        assert len({batch.tobytes() for batch in batches}) == N_BATCHES


def test_resumed_epoch_replays_the_uninterrupted_run():
    """Setting epoch e directly (a resumed fit) gives the batches a run has on reaching epoch e."""
    uninterrupted = epoch_outputs(seeded(3), range(N_EPOCHS))
    resumed = epoch_outputs(seeded(3), [N_EPOCHS - 1])
    np.testing.assert_array_equal(resumed[0], uninterrupted[-1])


def test_unseeded_augmenter_records_its_random_seed():
    aug = seeded(None)
    assert aug.seed != seeded(None).seed
    np.testing.assert_array_equal(np.stack(epoch_outputs(aug, [0, 1])),
                                  np.stack(epoch_outputs(seeded(aug.seed), [0, 1])))


def test_augmenter_needs_the_batch_step():
    """A plain ``ds.map(augmenter)`` would seed every batch alike: it is refused, not run."""
    inputs, labels = indexed_batch()
    aug = seeded(0)
    with pytest.raises(TypeError, match="step"):
        tf.data.Dataset.from_tensors((inputs, labels)).map(aug)
    with pytest.raises(ValueError, match="apply needs \\(inputs, labels\\) batches"):
        aug.apply(tf.data.Dataset.from_tensors(inputs))


# ----------------------------------------------------------------------------- warm-up

def test_disabled_augmenter_is_identity():
    inputs, labels = indexed_batch()
    aug = Augmenter(AugmentConfig(), seed=0)
    assert not aug.enabled.numpy()
    out, out_labels = numpy_out(aug(inputs, labels, step=0))
    for key in inputs:
        np.testing.assert_array_equal(out[key], inputs[key])
    np.testing.assert_array_equal(out_labels, labels)


def test_schedule_flips_are_seen_by_the_dataset_pipeline():
    inputs, labels = indexed_batch()
    aug = Augmenter(AugmentConfig(warmup_epochs=2, mixup_alpha=1.0), seed=0)
    schedule = AugmentationSchedule(aug)
    batches = tf.data.Dataset.from_tensor_slices((inputs, labels)).repeat(4).batch(B)
    ds = aug.apply(batches).prefetch(2)
    seen = []
    for epoch in range(4):
        schedule.on_epoch_begin(epoch)
        assert bool(aug.enabled.numpy()) == (epoch >= 2)
        seen.append({classify(inputs, labels, *numpy_out(out)) for out in ds})
    assert seen[0] == seen[1] == {"none"}
    assert "none" not in seen[2] and "none" not in seen[3]
    schedule.on_epoch_begin(0)                      # and back off (e.g. a restarted fit)
    assert {classify(inputs, labels, *numpy_out(out)) for out in ds} == {"none"}


def test_schedule_inside_model_fit():
    """End to end: labels seen by the loss are hard during warm-up and soft afterwards."""
    import keras

    inputs, labels = indexed_batch()
    soft = []

    class SoftLabels(keras.metrics.Mean):
        def update_state(self, y_true, y_pred, sample_weight=None):
            y = tf.cast(y_true, tf.float32)
            return super().update_state(tf.cast(tf.abs(y * (1 - y)) > 1e-6, tf.float32))

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            soft.append(logs["soft"])

    spectral = keras.Input((H, W, C), name="spectral")
    scalars = keras.Input((S,), name="scalars")
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(spectral), scalars])
    model = keras.Model({"spectral": spectral, "scalars": scalars},
                        keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile("sgd", "binary_crossentropy", metrics=[SoftLabels(name="soft")])
    aug = Augmenter(AugmentConfig(warmup_epochs=1, mixup_alpha=1.0), seed=0)
    ds = aug.apply(tf.data.Dataset.from_tensor_slices((inputs, labels)).repeat(8).batch(B))
    model.fit(ds, epochs=3, verbose=0, shuffle=False,
              callbacks=[AugmentationSchedule(aug), Record()])
    assert soft[0] == 0.0 and soft[1] > 0.2 and soft[2] > 0.2, soft


# ----------------------------------------------------------------------------- masking

MASKED = AugmentConfig(warmup_epochs=0, freq_masks=2, freq_mask_width=4, time_masks=1,
                       time_mask_width=5)


def test_run_masks_are_runs_of_up_to_the_width_anywhere_on_the_axis():
    rows = run_masks(400, 20, 1, 5, tf.constant([3, 4], tf.int64)).numpy()  # [400, 20]
    assert rows.shape == (400, 20) and rows.dtype == bool
    widths = rows.sum(axis=1)
    assert set(widths) == set(range(6))                          # 0 .. max_width, each drawn
    for row, width in zip(rows, widths):                         # one contiguous run per row
        if width:
            start = np.argmax(row)
            assert row[start:start + width].all()
    assert rows[:, 0].any() and rows[:, -1].any()                # both ends reachable


def test_run_masks_wider_than_the_axis_are_clipped_to_it():
    rows = run_masks(200, 6, 1, 50, tf.constant([1, 2], tf.int64)).numpy()
    assert rows.sum(axis=1).max() == 6 and set(rows.sum(axis=1)) == set(range(7))


def test_no_runs_mask_nothing():
    assert not run_masks(4, 9, 0, 3, tf.constant([0, 0], tf.int64)).numpy().any()


def test_mask_maps_zeroes_whole_bands_and_frames_of_every_map_per_clip():
    spectral = np.random.default_rng(0).uniform(1, 2, (32, H, W, C)).astype(np.float32)
    out = mask_maps(spectral, MASKED, seed=5).numpy()
    zero = out == 0                                               # [B, H, W, C]
    np.testing.assert_array_equal(zero, zero[..., :1].repeat(C, axis=-1))  # all maps alike
    np.testing.assert_array_equal(out[~zero], spectral[~zero])   # the rest untouched
    for clip in zero[..., 0]:                                    # [H, W]: full bands | full frames
        bands, frames = clip.all(axis=1), clip.all(axis=0)
        np.testing.assert_array_equal(clip, bands[:, None] | frames[None, :])
        assert bands.sum() <= MASKED.freq_masks * MASKED.freq_mask_width
        assert frames.sum() <= MASKED.time_masks * MASKED.time_mask_width
    assert len({clip.tobytes() for clip in zero}) > 1            # each clip draws its own runs
    np.testing.assert_array_equal(mask_maps(spectral, MASKED, seed=5).numpy(), out)


def test_mask_maps_keeps_bfloat16():
    spectral = tf.ones([2, H, W, C], tf.bfloat16)
    out = mask_maps(spectral, MASKED, seed=1)
    assert out.dtype == tf.bfloat16 and out.shape == spectral.shape


def test_masks_leave_the_branch_draws_as_they_were():
    """The masks have their own seed stream: the masked output is the unmasked one, zeroed."""
    inputs, labels = indexed_batch()
    inputs["spectral"] += 1.0                                     # no zero before masking
    plain = Augmenter(dataclasses.replace(MASKED, freq_masks=0, time_masks=0), seed=4)
    masked = Augmenter(MASKED, seed=4)
    for step in range(6):
        ref_inputs, ref_labels = numpy_out(plain(inputs, labels, step))
        out_inputs, out_labels = numpy_out(masked(inputs, labels, step))
        np.testing.assert_array_equal(out_labels, ref_labels)
        np.testing.assert_array_equal(out_inputs["scalars"], ref_inputs["scalars"])
        zero = out_inputs["spectral"] == 0
        assert zero.any()
        np.testing.assert_array_equal(out_inputs["spectral"],
                                      np.where(zero, 0.0, ref_inputs["spectral"]))


def test_masked_augmenter_direct_call_equals_inside_dataset_map():
    inputs, labels = indexed_batch()
    aug = Augmenter(MASKED, seed=2)
    ds = aug.apply(tf.data.Dataset.from_tensors((inputs, labels)).repeat(3))
    for step, (out, out_labels) in enumerate(ds):
        direct, direct_labels = numpy_out(aug(inputs, labels, step))
        np.testing.assert_array_equal(out["spectral"].numpy(), direct["spectral"])
        np.testing.assert_array_equal(out_labels.numpy(), direct_labels)


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("kwargs,message", [
    ({"p_cutmix": 1.5}, "p_cutmix must be in [0, 1], got 1.5"),
    ({"p_mixup": -0.1}, "p_mixup must be in [0, 1], got -0.1"),
    ({"p_cutmix": 0.7, "p_mixup": 0.5}, "p_cutmix + p_mixup must be <= 1, got 0.7 + 0.5"),
    ({"cutmix_alpha": 0.0}, "cutmix_alpha must be > 0, got 0.0"),
    ({"mixup_alpha": -1}, "mixup_alpha must be > 0, got -1"),
    ({"warmup_epochs": -1}, "warmup_epochs must be an integer >= 0, got -1"),
    ({"warmup_epochs": 2.5}, "warmup_epochs must be an integer >= 0, got 2.5"),
    ({"freq_masks": -1}, "freq_masks must be an integer >= 0, got -1"),
    ({"time_masks": 1.0}, "time_masks must be an integer >= 0, got 1.0"),
    ({"freq_mask_width": 0}, "freq_mask_width must be an integer >= 1, got 0"),
    ({"time_mask_width": 2.5}, "time_mask_width must be an integer >= 1, got 2.5"),
])
def test_config_validation_echoes_bad_value(kwargs, message):
    with pytest.raises(ConfigError) as info:
        AugmentConfig(**kwargs)
    assert message in str(info.value)


def test_config_defaults_are_the_paper_recipe():
    cfg = AugmentConfig()
    assert (cfg.p_cutmix, cfg.cutmix_alpha, cfg.p_mixup, cfg.mixup_alpha, cfg.warmup_epochs) == \
        (0.6, 1.0, 0.4, 0.2, 4)
    with pytest.raises(AttributeError):
        cfg.p_cutmix = 0.1  # frozen


CUTMIX_H, CUTMIX_W = 10, 12
"""A small map for the box and mask checks below."""


def test_cutmix_box_centre_reaches_every_row_and_column_and_an_inner_box_is_whole():
    """lam = 0.99 -> sides round(0.1 * 10) = 1, round(0.1 * 12) = 1: a 1x1 box at the centre."""
    ys, xs = set(), set()
    for seed in range(400):
        y1, y2, x1, x2 = (int(v) for v in cutmix_box(tf.constant(CUTMIX_H), tf.constant(CUTMIX_W), tf.constant(0.99),
                                                     tf.constant([seed, 2])))
        assert (y2 - y1, x2 - x1) == (1, 1), (seed, y1, y2, x1, x2)  # a 1x1 box never needs clipping
        ys.add(y1)
        xs.add(x1)
    assert ys == set(range(CUTMIX_H)) and xs == set(range(CUTMIX_W))  # centre uniform over the whole map


def test_run_mask_widths_stay_uniform_when_the_max_width_exceeds_the_axis():
    rows = run_masks(2000, 6, 1, 50, tf.constant([1, 2], tf.int64)).numpy()
    counts = np.bincount(rows.sum(axis=1), minlength=7)  # widths 0..6, each ~ 2000 / 7 = 286
    assert counts.max() < 2 * 2000 / 7, counts


def test_masks_draw_from_the_mask_stream_of_the_batch_seed():
    B = 8
    spectral = np.random.default_rng(0).uniform(1, 2, (B, CUTMIX_H, CUTMIX_W, 3)).astype(np.float32)
    inputs = {"spectral": spectral, "scalars": np.zeros((B, 5), np.float32)}
    labels = (np.arange(B) % 2).astype(np.float32)
    cfg = AugmentConfig(warmup_epochs=0, p_cutmix=0.0, p_mixup=0.0, freq_masks=2, freq_mask_width=4,
                        time_masks=1, time_mask_width=5)  # branch NONE: the output is the masked input
    aug = Augmenter(cfg, seed=4)
    for step in range(3):
        out, _ = aug(inputs, labels, step)
        seed = tf.random.experimental.stateless_fold_in(aug.step_seed(step), MASK_STREAM)
        np.testing.assert_array_equal(out["spectral"].numpy(), mask_maps(spectral, cfg, seed).numpy())
