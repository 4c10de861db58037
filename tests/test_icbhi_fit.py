"""``tfbreath.icbhi.fit``: a tiny RespireNet learns the synthetic task; the CLI writes a whole run."""

from __future__ import annotations

import json

import pytest

from conftest import ICBHI_DIR, needs_icbhi
import tfbreath.fit
from tfbreath.config import with_overrides
from tfbreath.icbhi import fit
from tfbreath.icbhi.config import IcbhiConfig, dump_icbhi_config
from tfbreath.icbhi.reader import parse_recording_name
from tfbreath.icbhi.synthetic import write_synthetic_icbhi

CHANCE_SCORE = 0.5
"""The best ICBHI score of any predictor that ignores its input: with a fixed class mix q,
Sp = q_normal and Se <= 1 - q_normal, so (Se + Sp) / 2 <= 0.5 (e.g. "always normal": Sp 1, Se 0)."""
MARGIN = 0.15
"""How far above chance the tiny model must score on the synthetic test split."""


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
    summary = fit.run(config, root, tmp_path / "run")
    stage1 = summary["stage1"]
    assert stage1["score"] >= CHANCE_SCORE + MARGIN, stage1
    assert stage1["sp"] > 0 and stage1["se"] > 0
    assert fit.FINETUNED not in summary and summary["finetuned_devices"] == []
    assert set(stage1["per_device"]) == set(summary["split"]["test"]["per_device"])
    assert (tmp_path / "run" / "stage1.keras").is_file()


@needs_icbhi
def test_main_smoke_run_on_the_icbhi_sample(tmp_path, capsys):
    """1 epoch + 1 fine-tuning epoch on the shared sample; 103 (LittC2SE) is a test-only device."""
    data = tmp_path / "icbhi_sample"
    data.mkdir()
    for path in ICBHI_DIR.iterdir():
        (data / path.name).symlink_to(path)
    # The sample has 4 patients and no official list; this one puts 101 + 104 in train, 102 + 103 in test.
    stems = sorted(p.stem for p in ICBHI_DIR.glob("*.wav"))
    (data / "ICBHI_challenge_train_test.txt").write_text(
        "".join(f"{s}\t{'test' if parse_recording_name(s)[0] in ('102', '103') else 'train'}\n" for s in stems))
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(dump_icbhi_config(_tiny(IcbhiConfig(name="tiny"))))
    out = tmp_path / "run"
    # Through the product's entry point: tfbreath.fit hands an ICBHI pipeline to tfbreath.icbhi.fit.
    code = tfbreath.fit.main(["--pipeline", str(pipeline), "--data", str(data), "--out", str(out),
                              "--epochs", "1", "--finetune-epochs", "1", "--seed", "3"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finetuned_devices"] == ["Litt3200", "Meditron"]
    assert set(metrics["finetuned"]["per_device"]) == {"LittC2SE", "Meditron"}
    # The unknown device falls back to stage 1, so its numbers are stage 1's.
    assert metrics["finetuned"]["per_device"]["LittC2SE"] == metrics["stage1"]["per_device"]["LittC2SE"]
    for stage in ("stage1", "finetuned"):
        assert 0.0 <= metrics[stage]["score"] <= 1.0 and "two_class" in metrics[stage]
    assert metrics["split"]["seed"] == 3
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("stage1.keras", "device_Litt3200.keras", "device_Meditron.keras", "history_stage1.csv",
                 "history_device_Meditron.csv", "pipeline.toml", "test_predictions.csv"):
        assert (out / name).is_file(), name
    assert "done: test split, stage1: score" in capsys.readouterr().out


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    synthetic = write_synthetic_icbhi(tmp_path / "data", n_patients=3, recordings_per_patient=1,
                                      cycles_per_recording=2, split_list=False)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('task = "icbhi"\n[train]\nclasses = 3\n')
    cases = [
        (["--pipeline", str(tmp_path / "missing.toml"), "--data", str(synthetic)], "pipeline file not found"),
        (["--pipeline", str(bad_toml), "--data", str(synthetic)], "classes must be one of [4, 2], got 3"),
        (["--data", str(tmp_path / "nowhere")], "data folder not found"),
        (["--data", str(synthetic), "--out", str(tmp_path / "run")], "ICBHI_challenge_train_test.txt"),
    ]
    for argv, message in cases:
        assert fit.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_a_resumed_run_must_use_the_same_pipeline(tmp_path, capsys):
    data = write_synthetic_icbhi(tmp_path / "data", n_patients=3, recordings_per_patient=1, cycles_per_recording=2)
    out = tmp_path / "run"
    out.mkdir()
    (out / "pipeline.toml").write_text(dump_icbhi_config(IcbhiConfig(name="other")))
    assert fit.main(["--data", str(data), "--out", str(out)]) == 2
    assert "holds a run of a different pipeline" in capsys.readouterr().err


def test_other_breath_flags_are_rejected():
    with pytest.raises(SystemExit) as exit_info:
        fit.main(["--data", "x", "--models", "cnn8"])
    assert exit_info.value.code == 2
