"""``tfbreath.icbhi.trainer``: a tiny RespireNet learns the synthetic task; ``fit`` on an ICBHI pipeline writes a whole run."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ICBHI_DIR, REPO, needs_icbhi
import tfbreath.fit
from tfbreath.config import ConfigError, with_overrides
from tfbreath.icbhi import trainer
from tfbreath.icbhi.config import IcbhiConfig, dump_icbhi_config, load_icbhi_config
from tfbreath.icbhi.finetune import compile_stage
from tfbreath.icbhi.reader import FALLBACK_SCHEME, OFFICIAL_SPLIT_FILE, IcbhiError
from tfbreath.icbhi.resnet import build_respirenet
from tfbreath.icbhi.spectrogram import cycle_spectrogram, spectrogram_shape
from tfbreath.icbhi.synthetic import synthetic_cycle, write_recording, write_synthetic_icbhi
from tfbreath.precision import PRECISION_ENV, global_policy, policy_of
from tfbreath.run_folder import CLIPS_FILE, CLIPS_HEADER, PIPELINE_FILE

QUICK = REPO / "pipelines" / "icbhi_quick.toml"
RESPIRENET = REPO / "pipelines" / "icbhi_respirenet.toml"

CHANCE_SCORE = 0.5
"""The best ICBHI score of any predictor that ignores its input: with a fixed class mix q,
Sp = q_normal and Se <= 1 - q_normal, so (Se + Sp) / 2 <= 0.5 (e.g. "always normal": Sp 1, Se 0)."""
TWO_CLASS_MARGIN = 0.25
"""How far above chance the tiny model's normal/abnormal reading must score on the synthetic test
split. Ten runs of this test's recipe (seeds 42, 1, 2, 3, 4; float32 and mixed_bfloat16) scored
0.86-1.00 there, while their exact 4-class scores spread over 0.54-0.82: after 96 steps the
model tells crackle, wheeze and "both" apart only roughly, and which of them the last epoch gets
right moves with the last bit of a float32 sum (a change of the spectrogram's power by 1e-7
relative took this test's 4-class score from above 0.65 to 0.57). The 4-class reading is only
asked to find some normal and some abnormal cycles."""

BF16_STEPS = 20
BF16_LEARNING_RATE = 0.05
"""SGD steps and rate in which the tiny model, without dropout, memorises one batch of 16 cycles
(training loss 1.4 -> below ``LEARNED_LOSS``, in float32 and in mixed_bfloat16 alike). Its
BatchNorm moving statistics have not settled after so few steps, so inference-mode predictions
are not asked to be right, only finite, float32 and reproduced by the loaded file."""
LEARNED_LOSS = 0.1


def _tiny(config: IcbhiConfig, **train) -> IcbhiConfig:
    """A CPU-sized RespireNet: 1/8-width ResNet-34, 3-s cycles, 32 mel bands, float32."""
    config = with_overrides(config, "model", width=1 / 8, dense_units=32, dropout=0.1)
    config = with_overrides(config, "audio", cycle_s=3.0)
    config = with_overrides(config, "spectrogram", n_mels=32)
    return with_overrides(config, "train", batch_size=16, precision="float32", **train)


def test_tiny_model_learns_the_synthetic_task(tmp_path):
    """Stage 1 alone (12 epochs x 8 steps, waveform augmentations off to keep it short)."""
    root = write_synthetic_icbhi(tmp_path / "data", n_patients=10, recordings_per_patient=2,
                                 cycles_per_recording=10, seed=0)
    config = _tiny(IcbhiConfig(), epochs=12, learning_rate=0.01, device_finetune=False)
    config = with_overrides(config, "augment", concat=False, noise_probability=0.0, speed_probability=0.0,
                            shift_probability=0.0)
    summary = trainer.run(config, root, tmp_path / "run")
    stage1 = summary["stage1"]
    assert stage1["two_class"]["score"] >= CHANCE_SCORE + TWO_CLASS_MARGIN, stage1
    assert stage1["sp"] > 0 and stage1["se"] > 0, stage1
    assert summary["precision"] == summary["stage1_dtype_policy"] == "float32"
    assert trainer.FINETUNED not in summary and summary["finetuned_devices"] == []
    assert set(stage1["per_device"]) == set(summary["split"]["test"]["per_device"])
    train_patients, test_patients = (summary["split"][side]["patients"] for side in ("train", "test"))
    assert train_patients and test_patients and not set(train_patients) & set(test_patients)
    assert len(train_patients) + len(test_patients) == 10  # every patient on one side
    assert (tmp_path / "run" / "stage1.keras").is_file()


def test_mixed_bfloat16_learns_saves_and_loads_under_either_policy(tmp_path):
    """bf16 layers, float32 spectrograms and probabilities; a .keras file keeps the policy it was made under."""
    config = with_overrides(_tiny(IcbhiConfig()), "model", dropout=0.0)
    rng = np.random.default_rng(0)
    labels = np.arange(config.train.batch_size) % config.train.classes
    waveforms = tf.constant(np.stack([synthetic_cycle(int(label), rng, config.audio.num_samples,
                                                      config.audio.sample_rate) for label in labels]), tf.float32)
    float32_inputs = cycle_spectrogram(waveforms, config).numpy()
    shape, classes = spectrogram_shape(config), config.train.classes
    with global_policy("mixed_bfloat16"):
        inputs = cycle_spectrogram(waveforms, config)  # tf.data's side: float32 whatever the policy
        assert inputs.dtype == tf.float32 and np.array_equal(inputs.numpy(), float32_inputs)
        keras.utils.set_random_seed(0)
        model = compile_stage(build_respirenet(shape, classes, config.model), BF16_LEARNING_RATE, config)
        history = model.fit(float32_inputs, np.eye(classes, dtype=np.float32)[labels], batch_size=len(labels),
                            epochs=BF16_STEPS, shuffle=False, verbose=0).history
        probabilities = model.predict(float32_inputs, verbose=0)
        model.save(tmp_path / "bf16.keras")
    assert policy_of(model) == "mixed_bfloat16"
    losses = history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < LEARNED_LOSS < losses[0], losses
    assert history["accuracy"][-1] == 1.0
    assert probabilities.dtype == np.float32 and np.all(np.isfinite(probabilities))

    loaded = keras.models.load_model(tmp_path / "bf16.keras")  # under float32
    assert policy_of(loaded) == "mixed_bfloat16"
    np.testing.assert_array_equal(loaded.predict(float32_inputs, verbose=0), probabilities)

    float32_model = build_respirenet(shape, classes, config.model)
    expected = float32_model.predict(float32_inputs, verbose=0)
    float32_model.save(tmp_path / "float32.keras")
    with global_policy("mixed_bfloat16"):
        loaded = keras.models.load_model(tmp_path / "float32.keras")
        np.testing.assert_array_equal(loaded.predict(float32_inputs, verbose=0), expected)
    assert policy_of(loaded) == "float32"


@needs_icbhi
def test_quick_pipeline_runs_end_to_end_on_the_icbhi_sample(tmp_path, capsys, monkeypatch):
    """The one-command run of the README on the shared sample (no official list: the patient-wise
    fallback), through the product's entry point, with 1 + 1 epochs to keep the suite fast."""
    monkeypatch.setenv(PRECISION_ENV, "float32")  # what "auto" resolves to, the same on every CPU
    out = tmp_path / "run"
    code = tfbreath.fit.main(["--pipeline", str(QUICK), "--data", str(ICBHI_DIR), "--out", str(out),
                              "--epochs", "1", "--finetune-epochs", "1", "--seed", "3"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    fallback = (f"  split: no {OFFICIAL_SPLIT_FILE} under {ICBHI_DIR}, so a patient-wise {FALLBACK_SCHEME} split "
                f"instead of 'official'; only 4 patients, so 1 of them on the test side")
    assert fallback in stdout.splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == metrics["stage1_dtype_policy"] == "float32"
    split = metrics["split"]
    assert (split["scheme"], split["configured_scheme"], split["seed"]) == (FALLBACK_SCHEME, "official", 3)
    assert split["note"] == fallback.split("split: ")[1]
    assert split["train"]["cycles"] + split["test"]["cycles"] == 97
    for stage in ("stage1", "finetuned"):
        result = metrics[stage]
        assert {"score", "se", "sp", "two_class"} <= set(result)
        assert result["score"] is None or 0.0 <= result["score"] <= 1.0
    # Each training device has its copy; a test-only device falls back to stage 1's numbers.
    assert metrics["finetuned_devices"] == sorted(split["train"]["per_device"])
    for device in set(split["test"]["per_device"]) - set(metrics["finetuned_devices"]):
        assert metrics["finetuned"]["per_device"][device] == metrics["stage1"]["per_device"][device]
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("stage1.keras", "history_stage1.csv", "pipeline.toml", "test_predictions.csv",
                 *(f"device_{d}.keras" for d in metrics["finetuned_devices"])):
        assert (out / name).is_file(), name
    assert f"done: {FALLBACK_SCHEME} test split, stage1: score" in stdout


def test_quick_pipeline_keeps_the_recipes_techniques():
    """The quick pipeline shrinks sizes and epochs only: padding, augmentation and split are RespireNet's."""
    quick, recipe = load_icbhi_config(QUICK), IcbhiConfig()
    assert quick.name == "icbhi_quick" and quick.model.width < recipe.model.width
    assert (quick.padding, quick.augment, quick.split) == (recipe.padding, recipe.augment, recipe.split)
    assert (quick.train.precision, quick.train.device_finetune) == ("auto", True)


def _recording(folder, stem: str = "105_1b1_Al_sc_Meditron", annotation: str = "0.1\t0.9\t0\t0\n"):
    """One 2-s recording at 4 kHz and its annotation text in ``folder``; returns ``folder``."""
    wav = write_recording(folder, stem, 0.5 * np.sin(np.arange(8000) / 3.0), 4000, ())
    wav.with_suffix(".txt").write_text(annotation)
    return folder


def test_bad_inputs_exit_2_with_one_line_and_claim_no_run_folder(tmp_path, capsys):
    synthetic = write_synthetic_icbhi(tmp_path / "data", n_patients=3, recordings_per_patient=1,
                                      cycles_per_recording=2)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('task = "icbhi"\n[train]\nclasses = 3\n')
    (tmp_path / "no_wav").mkdir()
    (tmp_path / "no_wav" / "notes.txt").write_text("a folder without recordings\n")
    _recording(tmp_path / "malformed", annotation="0.1\t0.9\t0\n")
    (_recording(tmp_path / "no_txt") / "105_1b1_Al_sc_Meditron.txt").unlink()
    (_recording(tmp_path / "bad_list") / "patient_diagnosis.csv").write_bytes(b"\xff\xfe not text")
    out_file = tmp_path / "out_file"
    out_file.write_text("a file, not a folder\n")
    cases = [
        (["--pipeline", str(tmp_path / "missing.toml"), "--data", str(synthetic)], "pipeline file not found"),
        (["--pipeline", str(bad_toml), "--data", str(synthetic)], "classes must be one of [4, 2], got 3"),
        (["--data", str(tmp_path / "nowhere")], "data folder not found"),
        (["--data", str(tmp_path / "no_wav")], "no usable ICBHI recordings; expected patient_index_location"),
        (["--data", str(tmp_path / "malformed")], "1 skipped, e.g. " + str(tmp_path / "malformed" /
                                                  "105_1b1_Al_sc_Meditron.txt") + " line 1: malformed annotation"),
        (["--data", str(tmp_path / "no_txt")], "1 skipped, e.g. " + str(tmp_path / "no_txt" /
                                               "105_1b1_Al_sc_Meditron.wav") + ": no annotation file"),
        (["--data", str(tmp_path / "bad_list")], "patient_diagnosis.csv: cannot read this list file"),
        (["--data", str(synthetic), "--out", str(out_file)], "the run folder is a file"),
        (["--data", str(_recording(tmp_path / "one_patient"))], "need at least 2 patients"),
    ]
    for argv, message in cases:
        out = tmp_path / "run"
        pipeline_first = ["--pipeline", str(RESPIRENET), *argv]  # a later --pipeline wins
        assert tfbreath.fit.main(pipeline_first + ([] if "--out" in argv else ["--out", str(out)])) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not out.exists(), argv  # nothing claimed: the corrected rerun is not blocked


def test_a_run_failing_before_training_does_not_block_its_corrected_rerun(tmp_path, capsys):
    """The folder is claimed once the data is read and the model built, not before (issue 18 j)."""
    data = write_synthetic_icbhi(tmp_path / "data", n_patients=2, recordings_per_patient=1, cycles_per_recording=2)
    out = tmp_path / "run"
    broken = with_overrides(_tiny(IcbhiConfig(name="tiny")), "model", initial_weights=str(tmp_path / "none.keras"))
    with pytest.raises(IcbhiError, match="none.keras"):
        trainer.run(broken, data, out)
    assert not (out / PIPELINE_FILE).exists()
    # The corrected pipeline gets past the run folder's check (here to an empty data folder's error).
    (tmp_path / "empty").mkdir()
    with pytest.raises(IcbhiError, match="no usable ICBHI recordings"):
        trainer.run(_tiny(IcbhiConfig(name="tiny")), tmp_path / "empty", out)


def test_a_run_folder_is_claimed_with_its_cycles_on_their_sides(tmp_path, monkeypatch):
    """A rerun on other recordings, or with a split that moves a cycle to another side, would
    resume a stage 1 trained on cycles it is then scored on: refused; the same data copied resumes."""
    class Claimed(Exception):
        pass

    def stop_after_the_claim(*args, **kwargs):
        raise Claimed

    monkeypatch.setattr(trainer, "train_stage1", stop_after_the_claim)
    data = write_synthetic_icbhi(tmp_path / "data", n_patients=4, recordings_per_patient=1, cycles_per_recording=3)
    config, out = _tiny(IcbhiConfig(name="tiny")), tmp_path / "run"
    with pytest.raises(Claimed):
        trainer.run(config, data, out)
    rows = (out / CLIPS_FILE).read_text().splitlines()
    assert rows[0] == ",".join(CLIPS_HEADER) and len(rows) == 1 + 4 * 3
    assert {row.split("/")[0] for row in rows[1:]} == {"train", "test"}
    assert rows[1].split(",")[0].endswith("#1") and rows[2].split(",")[0].endswith("#2")
    copy = shutil.copytree(data, tmp_path / "copy")
    with pytest.raises(Claimed):  # the same cycles under another path resume
        trainer.run(config, copy, out)
    split_list = copy / OFFICIAL_SPLIT_FILE
    swapped = {"train": "test", "test": "train"}
    split_list.write_text("".join(f"{stem}\t{swapped[side]}\n" for stem, side in
                                  (line.split() for line in split_list.read_text().splitlines())))
    with pytest.raises(ConfigError, match="holds models trained on other clips"):
        trainer.run(config, copy, out)
    for wav in sorted(data.glob("104_*")):
        wav.unlink()
    with pytest.raises(ConfigError, match="3 of its clips are not among these"):
        trainer.run(config, data, out)


def test_a_resumed_run_is_matched_by_its_parsed_pipeline(tmp_path):
    config = _tiny(IcbhiConfig(name="tiny"))
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    out.mkdir()
    text = dump_icbhi_config(config)
    (out / PIPELINE_FILE).write_text("# copied by hand\n" + text.replace(" = ", "   =   "))
    with pytest.raises(IcbhiError, match="no usable ICBHI recordings"):  # past the check: the same pipeline
        trainer.run(config, empty, out)
    with pytest.raises(ConfigError, match="holds a run of a different pipeline"):
        trainer.run(with_overrides(config, "train", epochs=5), empty, out)
    (out / PIPELINE_FILE).write_text("not a pipeline [")
    with pytest.raises(ConfigError, match="holds a run of a different pipeline"):
        trainer.run(config, empty, out)


def test_a_resumed_run_must_use_the_same_pipeline(tmp_path, capsys):
    data = write_synthetic_icbhi(tmp_path / "data", n_patients=3, recordings_per_patient=1, cycles_per_recording=2)
    out = tmp_path / "run"
    out.mkdir()
    (out / "pipeline.toml").write_text(dump_icbhi_config(IcbhiConfig(name="other")))
    assert tfbreath.fit.main(["--pipeline", str(RESPIRENET), "--data", str(data), "--out", str(out)]) == 2
    assert "holds a run of a different pipeline" in capsys.readouterr().err


def test_other_breath_flags_are_rejected_and_verbose_is_taken(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tfbreath.fit.main(["--pipeline", str(RESPIRENET), "--data", "x", "--models", "cnn8"])
    assert exit_info.value.code == 2
    assert tfbreath.fit.main(["--pipeline", str(RESPIRENET), "--data", str(tmp_path / "nowhere"),
                              "--verbose"]) == 2  # every tool's flag
    assert "data folder not found" in capsys.readouterr().err
