"""The ICBHI recipe's run: train RespireNet on an ICBHI 2017 folder, fine-tune, score the test split.

``python -m tfbreath.fit --pipeline P`` runs it for a pipeline with ``task = "icbhi"``, e.g.

    python -m tfbreath.fit --pipeline pipelines/icbhi_respirenet.toml --data DIR
                           [--out DIR] [--epochs N] [--finetune-epochs N] [--seed N]

Flags override the pipeline file: ``--epochs`` stage 1, ``--finetune-epochs`` stage 2,
``--seed`` the split, shuffling, augmentation and initialisation. ``DIR`` holds the ICBHI
recordings (``*.wav`` + ``*.txt`` annotations, and the official split list for
``scheme = "official"``; without it the run falls back to a patient-wise 60/40 split and says so).

Stage 1 trains on every training cycle; stage 2 fine-tunes one copy per recording device
(``[train] device_finetune``). Both are scored on the test split, the fine-tuned one with each
cycle routed to its device's copy. With ``[train] select = "best"``, ``validation_fraction`` of
the training patients are held out of both stages (``hold_out_validation``) and stage 1 keeps
its epoch with the best ICBHI score on them; the test split is still only scored at the end.
The run folder (default ``saved_models/<pipeline name>``) receives the resolved
``pipeline.toml`` and ``clips.csv`` (its claim: ``_clips``), ``stage1.keras`` (and
``stage1_selection.json``), ``device_<DEVICE>.keras``, ``metrics.json`` (ICBHI score, Se, Sp,
per class and per device, confusion matrices, the split scheme used, each side's patients, the
precision and, with ``select = "best"``, the epoch kept),
``confusion_matrix.png``, ``test_predictions.csv`` and ``history_<stage>.csv``. Running the
same command again resumes an interrupted run.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfbreath import artifacts
from tfbreath.config import ConfigError, with_overrides
from tfbreath.icbhi.config import IcbhiConfig, dump_icbhi_config, load_icbhi_config, parse_icbhi_config
from tfbreath.icbhi.dataset import CLASS_NAMES, CycleSet, load_cycle_sets
from tfbreath.icbhi.finetune import (SELECT_BEST, STAGE1, finetune_devices, predict_probabilities, read_selection,
                                     train_stage1)
from tfbreath.icbhi.image import INPUT as IMAGE_INPUT, channel_statistics
from tfbreath.icbhi.padding import smart_pad
from tfbreath.icbhi.reader import IcbhiError, parse_recording_name, validation_patients
from tfbreath.icbhi.resnet import build_respirenet
from tfbreath.icbhi.score import icbhi_scores, plot_confusion, to_two_class
from tfbreath.icbhi.spectrogram import spectrogram_shape
from tfbreath.precision import choose_precision, global_policy, policy_of
from tfbreath.run_folder import RUNS_DIR, RunFolder

FINETUNED = "finetuned"
"""Key of the device-routed (stage-2) results in ``metrics.json``; stage 1's is ``"stage1"``."""
TWO_CLASS = 2


def resolve(pipeline_file: Path | None, data_dir: Path, out: Path | None, epochs: int | None = None,
            finetune_epochs: int | None = None, seed: int | None = None) -> tuple[IcbhiConfig, Path, Path]:
    """The pipeline (default: the embedded RespireNet recipe) with the given settings applied
    (``None`` keeps the file's: ``epochs`` stage 1, ``finetune_epochs`` stage 2, ``seed`` the split,
    shuffling, augmentation and initialisation), the data folder and the run folder."""
    config = load_icbhi_config(pipeline_file) if pipeline_file else IcbhiConfig()
    config = with_overrides(config, "train", epochs=epochs, finetune_epochs=finetune_epochs)
    config = with_overrides(config, "split", seed=seed)
    if not data_dir.is_dir():
        raise IcbhiError(f"{data_dir}: data folder not found")
    run_dir = out or RUNS_DIR / config.name
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: the run folder is a file; pass another --out")
    return config, data_dir, run_dir


def _parse_saved(path: Path) -> IcbhiConfig:
    return parse_icbhi_config(path.read_text(encoding="utf-8"), source=str(path))


def evaluate(probabilities: np.ndarray, cycles: CycleSet, classes: int) -> dict[str, Any]:
    """ICBHI scores of ``[N, classes]`` probabilities (argmax); a 4-class run also gets its 2-class reading."""
    predicted = np.argmax(probabilities, axis=-1)
    result = icbhi_scores(cycles.labels, predicted, classes, devices=cycles.devices)
    if classes != TWO_CLASS:
        result["two_class"] = icbhi_scores(to_two_class(cycles.labels), to_two_class(predicted), TWO_CLASS,
                                           devices=cycles.devices)
    return result


def score_test(probabilities: dict[str, np.ndarray], test_set: CycleSet, classes: int,
               predictions_file: Path) -> dict[str, dict[str, Any]]:
    """Each stage's ``evaluate`` of its ``[N, classes]`` test-row probabilities, one row per
    annotated cycle: a long cycle's windows vote first (``CycleSet.per_cycle``). Writes the
    per-cycle predictions to ``predictions_file``.
    """
    voted = {stage: test_set.per_cycle(p) for stage, p in probabilities.items()}  # {stage: ([M, C], cycles)}
    cycles = next(iter(voted.values()))[1]  # the same M cycles for every stage
    _write_predictions(predictions_file, cycles, classes, {stage: p for stage, (p, _) in voted.items()})
    return {stage: evaluate(p, cycles, classes) for stage, (p, _) in voted.items()}


def _write_predictions(path: Path, cycles: CycleSet, classes: int, probabilities: dict[str, np.ndarray]) -> None:
    """One row per test cycle: recording, device, true class, predicted class per stage."""
    names = CLASS_NAMES[classes]
    lines = [",".join(["recording", "device", "label", *probabilities])]
    predicted = {stage: np.argmax(p, axis=-1) for stage, p in probabilities.items()}
    for i in range(len(cycles)):
        lines.append(",".join([str(cycles.recordings[i]), str(cycles.devices[i]), names[int(cycles.labels[i])],
                               *(names[int(predicted[stage][i])] for stage in probabilities)]))
    artifacts.write_text(path, "\n".join(lines) + "\n")


def _patients(cycles: CycleSet) -> np.ndarray:
    """The patient of each cycle's recording. ``[N]``"""
    return np.array([parse_recording_name(stem)[0] for stem in cycles.recordings.tolist()])


def _clips(sides: dict[str, CycleSet]) -> list[tuple[str, str, float]]:
    """``(<side>/<recording>#<n>, patient, label)`` of each annotated cycle of each side (n counts a
    recording's cycles on that side from 1), as ``RunFolder.claim`` records them: a rerun on other
    recordings, or whose split puts a cycle on another side, is refused."""
    rows = []
    for side, cycles in sides.items():
        _, first = np.unique(cycles.cycle_ids, return_index=True)  # a long cycle's windows share its id
        patients = _patients(cycles)
        seen = collections.Counter()
        for i in np.sort(first).tolist():
            stem = str(cycles.recordings[i])
            seen[stem] += 1
            rows.append((f"{side}/{stem}#{seen[stem]}", str(patients[i]), float(cycles.labels[i])))
    return rows


def _split_summary(sides: dict[str, CycleSet]) -> dict[str, Any]:
    def counts(cycles: CycleSet) -> dict[str, Any]:
        devices, per_device = np.unique(cycles.devices, return_counts=True)
        return {"cycles": len(np.unique(cycles.cycle_ids)), "windows": len(cycles),
                "recordings": len(set(cycles.recordings.tolist())),
                "per_device": {str(d): int(n) for d, n in zip(devices, per_device)},
                "patients": sorted(set(_patients(cycles).tolist()))}
    return {side: counts(cycles) for side, cycles in sides.items()}


def _repeat_padded(cycles: CycleSet, length: int) -> CycleSet:
    """Every cycle padded by repeating itself, as ``smart = false`` pads it."""
    padded = [smart_pad([waveform[offset:offset + own]], [label], 0, length, smart=False)
              for waveform, offset, own, label in zip(cycles.waveforms, cycles.offsets, cycles.lengths, cycles.labels)]
    return dataclasses.replace(cycles, waveforms=np.stack([p.waveform for p in padded]),
                               offsets=np.array([p.offset for p in padded]),
                               lengths=np.array([p.cycle_length for p in padded]))


def hold_out_validation(train_set: CycleSet, config: IcbhiConfig) -> tuple[CycleSet, CycleSet]:
    """``(train, validation)``: the training cycles without and with the patients that
    ``reader.validation_patients`` holds out (``[train] validation_fraction``, ``[split] seed``).

    Only training patients can be held out, so the test split stays unseen until the end. The
    validation cycles are padded as the test cycles are: smart padding reads the neighbours'
    labels, so unless ``[padding] smart_test`` they are re-padded by repeating themselves.
    """
    patients = _patients(train_set)
    held = np.isin(patients, validation_patients(patients, train_set.labels, config.train.validation_fraction,
                                                 config.split.seed))
    validation = train_set.subset(np.flatnonzero(held))
    if config.padding.smart and not config.padding.smart_test:
        validation = _repeat_padded(validation, config.audio.num_samples)
    return train_set.subset(np.flatnonzero(~held)), validation


def run(config: IcbhiConfig, data_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Train stage 1, fine-tune per device, score both on the test split; write the run folder.

    The models train under ``[train] precision`` (``tfbreath.precision``); the spectrograms are
    float32 whatever the policy (computed in tf.data), and Keras' global policy is restored
    afterwards. The run folder is claimed (its ``pipeline.toml`` written) only once the data has
    been read and the model built, so a run that fails before training blocks no corrected rerun.
    """
    run_dir = Path(run_dir)
    RunFolder(run_dir).refuse_other_run(config, _parse_saved)
    with global_policy(choose_precision(config.train.precision)) as precision:
        return _train_and_score(config, Path(data_dir), run_dir, precision)


def _train_and_score(config: IcbhiConfig, data_dir: Path, run_dir: Path, precision: str) -> dict[str, Any]:
    started = time.monotonic()
    seed = config.split.seed
    keras.utils.set_random_seed(seed)
    print(f"precision policy: {precision}")

    train_set, test_set, report = load_cycle_sets(config, data_dir)
    print(report)
    train = config.train
    sides = {"train": train_set, "test": test_set}
    if train.select == SELECT_BEST:
        train_set, validation_set = hold_out_validation(train_set, config)
        sides = {"train": train_set, "validation": validation_set, "test": test_set}
        print(f"validation: {len(validation_set)} cycles of patients "
              f"{', '.join(sorted(set(_patients(validation_set).tolist())))}, held out of training")
    statistics = None
    if config.spectrogram.input == IMAGE_INPUT:  # deterministic, so a resumed run builds the same model
        statistics = channel_statistics(train_set, config)
        mean, std = (np.array2string(values, precision=4) for values in statistics)
        print(f"image channels over {len(train_set)} training cycles: mean {mean}, std {std}")
    model = build_respirenet(spectrogram_shape(config), train.classes, config.model, statistics)
    print(f"RespireNet: {model.count_params():,} parameters, input {spectrogram_shape(config)}")
    RunFolder(run_dir).claim(dump_icbhi_config(config), _clips(sides))  # data read, model built: nothing blocks a rerun
    seconds = {}
    stage_started = time.monotonic()
    stage1 = train_stage1(model, train_set, config, run_dir, seed, validation=sides.get("validation", test_set))
    seconds[STAGE1] = time.monotonic() - stage_started
    probabilities = {STAGE1: predict_probabilities(stage1, test_set, config)}
    finetuned_devices = []
    if train.device_finetune and train.finetune_epochs > 0:
        stage_started = time.monotonic()
        devices = finetune_devices(stage1, train_set, config, run_dir, seed)
        seconds[FINETUNED] = time.monotonic() - stage_started
        finetuned_devices = sorted(devices.devices)
        probabilities[FINETUNED] = devices.predict(test_set, config)
    RunFolder(run_dir).drop_empty_backups()  # each stage removes its own checkpoints once saved

    results = score_test(probabilities, test_set, train.classes, run_dir / "test_predictions.csv")
    plot_confusion({f"{stage}, test split": results[stage]["confusion_matrix"] for stage in results},
                   train.classes, run_dir / "confusion_matrix.png")
    summary = {
        "pipeline": config.name,
        "data": str(data_dir),
        "precision": precision,
        "stage1_dtype_policy": policy_of(stage1),  # a resumed run may have trained stage 1 elsewhere
        "classes": list(CLASS_NAMES[train.classes]),
        "split": {"scheme": report.split_scheme, "configured_scheme": config.split.scheme, "note": report.split_note,
                  "seed": seed, **_split_summary(sides),
                  "skipped": {"files": len(report.skipped_files), "cycles": len(report.skipped_cycles)}},
        "parameters": int(stage1.count_params()),
        "selection": {"select": train.select, **read_selection(run_dir, STAGE1)},
        "finetuned_devices": finetuned_devices,
        **results,
        "train_seconds": {stage: round(value, 1) for stage, value in seconds.items()},
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    RunFolder(run_dir).write_metrics(summary)
    return summary


def describe(summary: dict[str, Any]) -> str:
    """One line: the split scheme and each stage's ICBHI score, Se and Sp."""
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"
    stages = [f"{stage}: score {pct(summary[stage]['score'])} (Se {pct(summary[stage]['se'])}, "
              f"Sp {pct(summary[stage]['sp'])})" for stage in (STAGE1, FINETUNED) if stage in summary]
    return f"{summary['split']['scheme']} test split, {'; '.join(stages)}"
