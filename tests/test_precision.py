"""Precision policies (tfbreath.precision): choosing one, and models trained under any policy
saving, loading, predicting and exporting in float32 on any CPU."""

from __future__ import annotations

import csv
import io

import keras
import numpy as np
import pytest

from tfbreath import export, fit, precision, predict, serving
from tfbreath.config import N_SCALARS, ConfigError, PipelineConfig, with_overrides
from tfbreath.ensemble import build_ensemble
from tfbreath.models import SCALAR_NORM, build_model
from tfbreath.synthetic import write_synthetic_breath

BF16 = "mixed_bfloat16"
SHAPE = (128, 63, 9)
BF16_RUN = with_overrides(with_overrides(PipelineConfig(), "train", model_width=0.125, epochs=2, models=("cnn8",),
                                         precision=BF16), "data", batch_size=16)
"""A few bf16 steps, forced whatever the CPU (bf16 is emulated where it is not native)."""
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""What Linux lists in /proc/cpuinfo for native bf16 (Cooper Lake's AVX-512, Sapphire Rapids' AMX),
spelled out here, not read from ``precision``, so dropping one there fails."""


def test_precision_is_chosen_from_the_hardware(tmp_path, monkeypatch):
    monkeypatch.delenv(precision.PRECISION_ENV, raising=False)
    bf16 = tmp_path / "cpuinfo_bf16"
    bf16.write_text("flags : fpu avx2 avx512f avx512_bf16 amx_tile\n")
    plain = tmp_path / "cpuinfo"
    plain.write_text("flags : fpu avx avx2\n")
    assert precision.cpu_supports_bf16(bf16)
    assert not precision.cpu_supports_bf16(plain)
    assert not precision.cpu_supports_bf16(tmp_path / "missing")
    assert precision.choose_precision("mixed_float16") == "mixed_float16"
    expected = BF16 if precision.cpu_supports_bf16() else "float32"
    assert precision.choose_precision("auto") == expected


@pytest.mark.parametrize("flag", NATIVE_BF16_FLAGS)
def test_either_bf16_flag_alone_means_native_bf16(tmp_path, flag):
    """A CPU listing only ``amx_bf16`` (or only ``avx512_bf16``) has native bfloat16 matrix math."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags : fpu avx2 avx512f {flag}\n")
    assert precision.cpu_supports_bf16(cpuinfo)


def test_auto_is_float16_on_a_gpu_and_an_empty_environment_variable_is_unset(monkeypatch):
    """``auto`` picks ``mixed_float16`` where TensorFlow lists a GPU; ``TFBREATH_PRECISION=`` forces nothing."""
    monkeypatch.setenv(precision.PRECISION_ENV, "")
    monkeypatch.setattr(precision.tf.config, "list_physical_devices", lambda kind=None: [kind])
    assert precision.choose_precision("auto") == "mixed_float16"


@pytest.mark.parametrize("forced", precision.POLICIES)
def test_the_environment_says_what_auto_means(monkeypatch, forced):
    monkeypatch.setenv(precision.PRECISION_ENV, forced)
    assert precision.choose_precision("auto") == forced
    assert precision.choose_precision("float32") == "float32"  # an explicit choice stays


def test_a_bad_forced_precision_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(precision.PRECISION_ENV, "bf16")
    with pytest.raises(ConfigError, match=r"TFBREATH_PRECISION must be one of .*got 'bf16'"):
        precision.choose_precision("auto")


def test_the_global_policy_is_restored_after_the_block_even_on_error():
    before = keras.mixed_precision.global_policy().name
    with pytest.raises(RuntimeError):
        with precision.global_policy(BF16):
            assert keras.mixed_precision.global_policy().name == BF16
            raise RuntimeError
    assert keras.mixed_precision.global_policy().name == before


def _features(n=4):
    rng = np.random.default_rng(1)
    return {"spectral": rng.normal(size=(n, *SHAPE)).astype("float32"),
            "scalars": rng.normal(3.0, 2.0, size=(n, N_SCALARS)).astype("float32")}


def _adapted_cnn8():
    model = build_model("cnn8", SHAPE, N_SCALARS, width=0.125)
    model.get_layer(SCALAR_NORM).adapt(np.random.default_rng(0).normal(3.0, 2.0, (50, N_SCALARS)).astype("float32"))
    return model


def test_a_float32_copy_of_a_bf16_ensemble_is_the_float32_model_with_its_weights():
    with precision.global_policy(BF16):
        member = _adapted_cnn8()
        ensemble = build_ensemble({"cnn8": member}, [1.0])
    assert precision.policy_of(ensemble) == BF16 and not precision.is_float32(ensemble)
    copy = precision.float32_copy(ensemble)
    assert precision.is_float32(copy)
    with precision.global_policy("float32"):
        reference = build_model("cnn8", SHAPE, N_SCALARS, width=0.125)
    reference.set_weights(member.get_weights())
    reference.get_layer(SCALAR_NORM).finalize_state()  # the adapted mean/variance in use
    x = _features()
    want = keras.ops.sigmoid(reference.predict(x, verbose=0)).numpy()
    np.testing.assert_array_equal(copy.predict(x, verbose=0), want)
    assert np.abs(ensemble.predict(x, verbose=0) - want).max() > 0  # bf16 really computed otherwise


def test_a_float32_model_is_its_own_float32_copy():
    with precision.global_policy("float32"):
        model = _adapted_cnn8()
    assert precision.float32_copy(model) is model


@pytest.mark.parametrize("saved_under, loaded_under", [(BF16, "float32"), ("float32", BF16)])
def test_a_saved_model_predicts_alike_whatever_policy_loads_it(tmp_path, saved_under, loaded_under):
    with precision.global_policy(saved_under):
        model = _adapted_cnn8()
    path = tmp_path / "cnn8.keras"
    model.save(path)
    x = _features()
    with precision.global_policy("float32"):
        want = serving.load_trained_model(path).predict(x, verbose=0)
    with precision.global_policy(loaded_under):
        got = serving.load_trained_model(path).predict(x, verbose=0)
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A run trained for a few steps under mixed_bfloat16, its data folder beside it."""
    root = tmp_path_factory.mktemp("bf16")
    clips = write_synthetic_breath(root / "data", n_sessions=8, clips_per_session=4)
    metrics = fit.run(BF16_RUN, clips, root / "run")
    assert metrics["dtype_policy"] == BF16 and metrics["models"]["cnn8"]["dtype_policy"] == BF16
    return root / "run"


@pytest.fixture(scope="module")
def bf16_tflite(bf16_run):
    """The bf16 run's ensemble exported to float32 TFLite by the CLI (exit 0: its self-check passed)."""
    out = bf16_run / "bf16.tflite"
    assert export.main(["--model", str(bf16_run), "--out", str(out)]) == 0
    return out


def test_a_bf16_run_exports_every_output_after_its_self_check(bf16_tflite):
    run = bf16_tflite.parent  # the fixture's exit 0 says the float32 self-check passed
    assert (run / "ensemble_waveform.keras").is_file() and (run / "ensemble_savedmodel" / "saved_model.pb").is_file()


def test_a_bf16_run_exports_an_int8_classifier(bf16_run, tmp_path):
    run = export.Run.load(bf16_run)
    train_examples, val_examples = run.split()
    trained = serving.load_trained_model(run.model_path("ensemble"))
    parts = export.int8_parts(trained, run.pipeline, train_examples, tmp_path)
    classifier = serving.TFLiteClassifier(parts.flatbuffer)
    probabilities = classifier(serving.load_waveforms(val_examples.files, run.pipeline))
    assert probabilities.shape == (len(val_examples),) and np.all((probabilities >= 0) & (probabilities <= 1))
    assert any(t["dtype"] == np.int8 for t in classifier.interpreter.get_tensor_details())


def _predicted(capsys, *argv):
    assert predict.main([str(a) for a in argv]) == 0
    return [float(row["Probability"]) for row in csv.DictReader(io.StringIO(capsys.readouterr().out))]


def test_a_bf16_run_predicts_the_same_under_either_global_policy_and_as_tflite(bf16_run, bf16_tflite, capsys):
    clips = sorted((bf16_run.parent / "data" / "train").glob("*.wav"))[:6]
    with precision.global_policy(BF16):
        under_bf16 = _predicted(capsys, "--model", bf16_run, *clips)
    with precision.global_policy("float32"):
        under_float32 = _predicted(capsys, "--model", bf16_run, *clips)
    assert under_bf16 == under_float32
    np.testing.assert_allclose(_predicted(capsys, "--model", bf16_tflite, *clips), under_float32,
                               atol=export.MAX_PROBABILITY_DIFF["none"])
