"""Waveform-in export: Keras, SavedModel and TFLite (each quantization) of a tiny trained run."""

from __future__ import annotations

import csv
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from tfbreath import export, fit, serving
from tfbreath.config import PipelineConfig, with_overrides
from tfbreath.run_folder import NO_QUANTIZATION
from tfbreath.models import build_model
from tfbreath.synthetic import write_synthetic_breath
from tfbreath.tflite_metadata import describe, read_metadata, with_metadata

TINY = with_overrides(with_overrides(PipelineConfig(), "train", model_width=0.125, epochs=40, models=("cnn8",),
                                     learning_rates={"cnn8": 3e-3}, precision="float32"), "data", batch_size=16)
TINY = with_overrides(TINY, "augment", p_cutmix=0.0, p_mixup=0.0)
"""A confident tiny model: the int8 self-check allows no flipped clip among the 16 validation
clips, so every validation probability must sit well away from 0.5. Measured: 100 % accuracy,
nearest probability 0.37 from the threshold, int8 max |dP| 0.004. (10 epochs with CutMix/MixUp
left clips within 0.02 of it, and one int8 flip failed the check on some runs.)"""
SAME_GRAPH_ATOL = 1e-5
"""The same float32 feature graph and model run by Keras and by a loaded SavedModel: grappler may
reorder the sums of the features' matrix products (the band-limit FIR, DFTs), so P moves by float32
rounding (seen: 1.4e-6), far below anything a threshold notices."""
XNNPACK_MEAN_LIMIT = 256
"""Batch from which TFLite 2.17's XNNPACK delegate runs a MEAN wrongly (see serving.MapAveragePooling2D)."""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained one-member run on synthetic clips (its data folder stays beside it)."""
    root = tmp_path_factory.mktemp("export")
    clips = write_synthetic_breath(root / "data", n_sessions=16, clips_per_session=4)
    fit.run(TINY, clips, root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def validation_clips(tiny_run):
    run = export.Run.load(tiny_run)
    _, val = run.split()
    return serving.load_waveforms(val.files, run.pipeline), val.labels


def _recorded(path, fold=None):
    with open(path, newline="") as handle:
        return sorted(row["file"] for row in csv.DictReader(handle) if fold is None or row["fold"] == fold)


def test_the_self_check_scores_the_clips_fit_held_out(tiny_run):
    training, held_out = export.Run.load(tiny_run).split()
    assert sorted(f.name for f in held_out.files) == _recorded(tiny_run / "validation_predictions.csv")
    assert not {f.name for f in training.files} & {f.name for f in held_out.files}
    assert len(training) + len(held_out) == len(list((tiny_run.parent / "data" / "train").glob("*.wav")))


def test_a_k_fold_run_is_checked_on_its_first_fold_and_a_run_without_a_record_refused(tiny_run, tmp_path):
    folder = tmp_path / "kfold"
    folder.mkdir()
    for name in ("pipeline.toml", "metrics.json"):
        shutil.copy(tiny_run / name, folder / name)
    files = _recorded(tiny_run / "validation_predictions.csv")
    rows = [f"{file},{i % 2},I,0.5" for i, file in enumerate(files)]  # fold 0, 1, 0, 1, ...
    (folder / "oof_predictions.csv").write_text("file,fold,Target,cnn8\n" + "\n".join(rows) + "\n")
    _, held_out = export.Run.load(folder).split()
    assert sorted(f.name for f in held_out.files) == files[::2]

    (folder / "oof_predictions.csv").write_text("file,fold,Target,cnn8\nnot_a_clip.wav,0,I,0.5\n")
    with pytest.raises(export.ExportError, match="1 of the 1 clips it held out are not in"):
        export.Run.load(folder).split()
    (folder / "oof_predictions.csv").unlink()
    with pytest.raises(export.ExportError, match="no record of the clips fit held out"):
        export.Run.load(folder).split()


@pytest.mark.parametrize("quantize", export.QUANTIZATIONS)
def test_each_quantization_passes_its_self_check_and_runs_without_flex(tiny_run, validation_clips, quantize,
                                                                       capsys):
    out = tiny_run / f"model_{quantize}.tflite"
    assert export.main(["--model", str(tiny_run), "--quantize", quantize, "--out", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out
    classifier = serving.TFLiteClassifier(out)  # builtin op resolver: a Flex op would fail to allocate
    metadata = read_metadata(out)
    assert metadata == export.app_metadata(export.Run.load(tiny_run), "ensemble", quantize)
    assert (metadata["model"]["quantize"], metadata["model"]["run"]) == (quantize, "run")
    assert (classifier.input["name"], classifier.output["name"]) == ("waveform", "p_exhale")
    waveforms, labels = validation_clips
    probabilities = classifier(waveforms)
    assert probabilities.shape == (len(labels),)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert classifier(waveforms[:1]).shape == (1,)  # batch resized back to one clip
    if quantize == "int8":  # the classifier really runs in int8
        assert any(t["dtype"] == np.int8 for t in classifier.interpreter.get_tensor_details())
    repeats = serving.TFLITE_BATCH // len(labels) + 2  # more clips than one interpreter call takes
    # Same clips, other batch sizes: XNNPACK tiles its float32 GEMMs by batch size, so sums round
    # differently (1.3e-6 seen near P = 0.55); a clip mixed up between calls would differ by ~0.1.
    np.testing.assert_allclose(classifier(np.tile(waveforms, (repeats, 1))), np.tile(probabilities, repeats),
                               atol=1e-5)


def test_keras_waveform_model_and_savedmodel_agree_with_the_feature_model(tiny_run, validation_clips):
    waveforms, _ = validation_clips
    run = export.Run.load(tiny_run)
    member = keras.models.load_model(tiny_run / "ensemble.keras")
    model = serving.waveform_model(member, run.pipeline)
    expected = model.predict(waveforms, verbose=0)
    assert expected.shape == (len(waveforms),)

    path = tiny_run / "check_waveform.keras"
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(waveforms, verbose=0), expected, atol=1e-6)

    served = tf.saved_model.load(str(export.save_serving(model, tiny_run / "check_savedmodel")))
    signature = served.signatures["serving_default"]
    got = signature(waveform=tf.constant(waveforms))[serving.PROBABILITY].numpy()
    np.testing.assert_allclose(got, expected, atol=SAME_GRAPH_ATOL)


def test_the_self_check_fails_a_model_an_app_would_misread(tmp_path):
    waveform = keras.Input((PipelineConfig().audio.num_samples,), name="waveform")
    model = keras.Model(waveform, keras.layers.Reshape(())(keras.layers.Dense(1)(waveform)))
    plain = _tflite(model, tmp_path / "model")
    identity = {"run": "r", "member": "cnn8", "quantize": "none", "weights_sha256": "0" * 64}
    metadata = describe(PipelineConfig(), identity)
    tagged = with_metadata(plain, metadata)
    assert export.metadata_problem(tagged, serving.TFLiteClassifier(tagged), metadata) is None
    assert export.metadata_problem(plain, serving.TFLiteClassifier(plain), metadata) == "metadata missing"
    other = describe(PipelineConfig(), {**identity, "run": "s"})
    assert export.metadata_problem(tagged, serving.TFLiteClassifier(tagged), other) == (
        "metadata read back differs from the one written")
    half_second = describe(with_overrides(PipelineConfig(), "audio", duration_s=0.5), identity)
    mislabelled = with_metadata(plain, half_second)
    assert export.metadata_problem(mislabelled, serving.TFLiteClassifier(mislabelled), half_second) == (
        "the interpreter shows (input, output, samples) ('waveform', 'p_exhale', 16000), "
        "the metadata ('waveform', 'p_exhale', 8000)")


def test_a_failed_self_check_writes_nothing_and_exits_1(tiny_run, monkeypatch, capsys):
    monkeypatch.setitem(export.MAX_PROBABILITY_DIFF, "none", -1.0)  # no model can pass this
    out = tiny_run / "rejected.tflite"
    assert export.main(["--model", str(tiny_run), "--out", str(out)]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert not out.exists()


def test_an_export_without_its_data_fails_first_and_writes_nothing(tiny_run, tmp_path, capsys):
    moved = tmp_path / "moved_run"  # the run without metrics.json: where its clips were is unknown
    moved.mkdir()
    for name in ("pipeline.toml", "ensemble.keras", "cnn8.keras"):
        shutil.copy(tiny_run / name, moved / name)
    assert export.main(["--model", str(moved), "--quantize", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {moved}: its training data folder is not available here; pass --data DIR"
    (moved / "metrics.json").write_text('{"data": "../gone/breath"}')  # recorded relative to where fit ran
    assert export.main(["--model", str(moved)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {moved}: its training data folder (../gone/breath, as its metrics.json says) is not "
                   f"available here; pass --data DIR")
    assert export.main(["--model", str(moved), "--member", "vgg"]) == 2  # the member is looked up first
    assert capsys.readouterr().err.strip().startswith(f"error: {moved / 'vgg.keras'}: model not found")
    assert export.main(["--model", str(moved), "--data", str(tmp_path / "typo")]) == 2  # never silently dropped
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'typo'}: data folder not found (--data)"
    assert sorted(p.name for p in moved.iterdir()) == ["cnn8.keras", "ensemble.keras", "metrics.json",
                                                       "pipeline.toml"]


def test_an_out_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for out, problem in ((blocker / "m.tflite", f"{blocker} is a file"), (tmp_path / "m.onnx", "must name a .tflite")):
        assert export.main(["--model", str(tmp_path / "no_run"), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {out}: ") and problem in err, err
    run = tmp_path / "run"  # --out elsewhere: the waveform .keras and the SavedModel still go into the run
    (run / "ensemble_waveform.keras").mkdir(parents=True)
    assert export.main(["--model", str(run), "--out", str(tmp_path / "m.tflite")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {run / 'ensemble_waveform.keras'}: is a folder; name a file"


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        export.main([])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == "error: the following arguments are required: --model (see --help)"


def test_bad_run_folder_gives_a_one_line_error(tmp_path, capsys):
    assert export.main(["--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(tmp_path) in err and "\n" not in err


def _tflite(model: keras.Model, path) -> bytes:
    return export.convert(export.save_serving(model, path), "none")


def _conv_member() -> keras.Model:
    spectral, scalars = keras.Input((8, 6, 3), name="spectral"), keras.Input((2,), name="scalars")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, padding="same")(spectral))
    return keras.Model({"spectral": spectral, "scalars": scalars},
                       keras.layers.Dense(1)(keras.layers.Concatenate()([pooled, scalars])))


def _temporal_member() -> keras.Model:
    """Global average and max pooling over time: a MEAN over one axis and a REDUCE_MAX, which
    XNNPACK runs right at any batch (measured), so they are exported as they are."""
    return build_model("temporal", (8, 6, 3), 2, width=0.0625)


@pytest.mark.parametrize("build_member", [_conv_member, _temporal_member])
def test_exported_global_pooling_is_exact_past_xnnpacks_batch_limit(build_member, tmp_path):
    member = build_member()
    model = serving.probability_model(member)
    assert not any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in model._flatten_layers())

    batch = XNNPACK_MEAN_LIMIT + 44  # a MEAN here returned 44 rows and corrupted the heap
    rng = np.random.default_rng(0)
    feeds = {"spectral": rng.normal(size=(batch, 8, 6, 3)).astype(np.float32),
             "scalars": rng.normal(size=(batch, 2)).astype(np.float32)}
    interpreter = tf.lite.Interpreter(model_content=_tflite(model, tmp_path / "model"))  # default delegates
    for detail in interpreter.get_input_details():
        interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], next(x for name, x in feeds.items() if name in detail["name"]))
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, keras.ops.sigmoid(member.predict(feeds, verbose=0)).numpy().reshape(-1),
                               atol=1e-5)

    path = tmp_path / "probability.keras"
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(feeds, verbose=0), got, atol=1e-5)


def test_join_graphs_feeds_the_first_models_outputs_to_the_second_by_name(tmp_path):
    x = keras.Input((4,), name="waveform")
    front = keras.Model(x, {"spectral": keras.layers.Dense(3, name="d1")(x),
                            "scalars": keras.layers.Dense(2, name="d2")(x)})
    spectral, scalars = keras.Input((3,), name="spectral"), keras.Input((2,), name="scalars")
    joined = keras.layers.Concatenate()([scalars, spectral])  # order differs from the front's outputs
    back = keras.Model({"spectral": spectral, "scalars": scalars},
                       keras.layers.Reshape(())(keras.layers.Dense(1, name="d3")(joined)))
    model = export.join_graphs(_tflite(front, tmp_path / "front"), _tflite(back, tmp_path / "back"))

    waveforms = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    expected = back.predict(front.predict(waveforms, verbose=0), verbose=0)
    np.testing.assert_allclose(serving.TFLiteClassifier(model)(waveforms), expected, atol=1e-5)


def test_join_graphs_names_what_the_second_model_misses(tmp_path):
    x = keras.Input((4,), name="waveform")
    front = keras.Model(x, {"spectral": keras.layers.Dense(3)(x)})
    y = keras.Input((3,), name="mel")
    back = keras.Model({"mel": y}, keras.layers.Reshape(())(keras.layers.Dense(1)(y)))
    with pytest.raises(export.ExportError, match=r"needs \['mel'\].*makes \['spectral'\]"):
        export.join_graphs(_tflite(front, tmp_path / "front"), _tflite(back, tmp_path / "back"))


def test_the_int8_input_stage_is_the_normalisation_not_the_layers_after_it(tmp_path):
    scalars = keras.Input((3,), name="scalars")
    normalised = keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[1.0, 4.0, 9.0],
                                            name="scalar_norm")(scalars)
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(normalised)
    model = keras.Model({"scalars": scalars}, keras.layers.Reshape(())(keras.layers.Dense(1, name="logit")(hidden)))
    names = export.float_input_stage(_tflite(model, tmp_path / "model"))
    assert len(names) == 2 and all("scalar_norm" in name for name in names)  # subtract, then scale


@pytest.mark.parametrize("member, own_layers, options", [
    ("pooled", ("pooled_statistics", "logit"), {"maps": ("mel", "lpc"), "map_rows": (8, 4)}),
    ("rbf", ("pooled_statistics", "rbf_kernel", "logit"), {"maps": ("mel", "lpc"), "map_rows": (8, 4), "n_landmarks": 5}),
    ("temporal", ("projection", "global_max", "logit"), {"width": 0.0625})])
def test_int8_keeps_every_op_of_a_float_member_float_and_no_other(member, own_layers, options, tmp_path):
    assert member in export.FLOAT_MEMBERS
    spectral, scalars = keras.Input((8, 6, 2), name="spectral"), keras.Input((3,), name="scalars")
    inputs = {"spectral": spectral, "scalars": scalars}
    float_member = build_model(member, (8, 6, 2), 3, **options)
    other = keras.layers.Dense(1, name="other_logit")(keras.layers.Flatten()(spectral))
    model = keras.Model(inputs, keras.layers.Reshape(())(keras.layers.Add()([float_member(inputs), other])))
    names = export.float_member_ops(_tflite(model, tmp_path / "model"))
    assert names and all(member in name for name in names)
    assert all(any(layer in name for name in names) for layer in own_layers), names
    assert not any("other_logit" in name for name in names)


def _three_dense_head(tmp_path):
    """Scalars -> three dense layers -> sigmoid: a classifier SavedModel (features -> probability)."""
    scalars = keras.Input((6,), name="scalars")
    hidden = keras.layers.Dense(8, activation="relu", name="first")(scalars)
    hidden = keras.layers.Dense(8, activation="relu", name="second")(hidden)
    member = keras.Model({"scalars": scalars}, keras.layers.Dense(1, name="logit")(hidden))
    return export.save_serving(serving.probability_model(member), tmp_path / "head")


def _int8_ops(flatbuffer: bytes) -> list[str]:
    """Output names of the ops of ``flatbuffer`` that compute in int8 (QUANTIZE ops aside)."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    outputs = [graph.tensors[op.outputs[0]] for op in graph.operators
               if export._builtin(model, op) != schema.BuiltinOperator.QUANTIZE]
    return [tensor.name.decode() for tensor in outputs if tensor.type == schema.TensorType.INT8]


def test_float_prefixes_end_right_before_each_weighted_op(tmp_path):
    flatbuffer = export.convert(_three_dense_head(tmp_path), "none")
    prefixes = export.float_prefixes(flatbuffer)
    assert len(prefixes) == 3 and prefixes[0] == []  # one per dense layer, the first keeps nothing float
    assert [len(prefix) for prefix in prefixes] == sorted({len(prefix) for prefix in prefixes})
    assert any("first" in name for name in prefixes[1]) and not any("first" in name for name in prefixes[0])
    assert any("second" in name for name in prefixes[2]) and not any("logit" in name for name in prefixes[2])


def test_quantize_head_keeps_float_only_the_prefix_int8_would_change(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    head = _three_dense_head(tmp_path)
    calibration = trial = {"scalars": np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)}
    all_int8 = _int8_ops(export.quantize_head(head, calibration, trial))  # a tiny dense net survives int8
    assert not any("first" in name for name in all_int8)  # it reads the input: float32 input stage
    assert any("second" in name for name in all_int8) and any("logit" in name for name in all_int8)
    monkeypatch.setattr(export, "MAX_INT8_MEAN_PROBABILITY_DIFF", -1.0)  # no prefix passes: the most float one
    mostly_float = _int8_ops(export.quantize_head(head, calibration, trial))
    assert not any("first" in name or "second" in name for name in mostly_float)
    assert any("logit" in name for name in mostly_float)


class _FixedKeras:
    """Stands in for the exported Keras model: a fixed P(exhale) per clip."""

    def __init__(self, probabilities):
        self.probabilities = np.asarray(probabilities, np.float32)

    def predict(self, waveforms, **kwargs):
        return self.probabilities


@pytest.mark.parametrize("quantize, keras_p, tflite_p, passed", [
    (NO_QUANTIZATION, [0.2, 0.7, 0.4, 0.9], [0.2, 0.7, 0.4, 0.9], True),
    (NO_QUANTIZATION, [0.2, 0.7, 0.4, 0.9], [0.2, 0.7, 0.4, 0.9 - 2e-3], False),  # one clip past 1e-3
    ("float16", [0.2, 0.7, 0.4, 0.9], [0.2, 0.7, 0.4, 0.9 - 5e-3], True),
    ("int8", [0.2, 0.7, 0.4, 0.9], [0.2, 0.7, 0.6, 0.9], False),  # a clip flips: accuracy 1.0 -> 0.75
    ("int8", [0.2, 0.7, 0.6, 0.9], [0.2, 0.7, 0.4, 0.9], True),  # the int8 model gains: no drop
])
def test_the_self_check_judges_the_worst_clip_and_the_accuracy_drop(quantize, keras_p, tflite_p, passed,
                                                                     monkeypatch):
    """``check``'s judgement alone (the interpreter and the metadata stood in for)."""
    labels = np.array([0.0, 1.0, 0.0, 1.0])
    monkeypatch.setattr(export, "TFLiteClassifier", lambda flatbuffer: lambda waveforms: np.float32(tflite_p))
    monkeypatch.setattr(export, "metadata_problem", lambda *args: None)
    row = export.check(b"", _FixedKeras(keras_p), quantize, np.zeros((4, 8)), labels, {})
    assert row["max_abs_diff"] == pytest.approx(np.max(np.abs(np.subtract(tflite_p, keras_p))), abs=1e-6)
    assert row["passed"] is passed, row
