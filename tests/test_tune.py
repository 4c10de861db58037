"""Hyperparameter search: the [tune] space, the HyperModels, the tune CLI, resuming, chief + workers."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import types

import keras
import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf

from tfbreath import hypermodel, run_folder, train, tune
from tfbreath.config import (ConfigError, MAP_NAMES, PipelineConfig, TuneConfig, config_from_dict, dump_config,
                             load_config, parse_config, with_overrides)
from tfbreath.hypermodel import BreathHyperModel
from tfbreath.models import SCALAR_NORM
from tfbreath.run_folder import SEARCH_PROJECT, SearchFolder
from tfbreath.synthetic import write_synthetic_breath

TINY_TUNE = """\
name = "tiny"

[features]
scalars = false

[data]
validation_fraction = 0.25

[train]
early_stopping_patience = 2

[tune]
tuner = "random"
max_trials = 2
max_epochs = 2
model_widths = [0.0625]
batch_sizes = [8]
warmup_epochs = [0, 1]

[tune.map_sets]
mel = ["mel"]
mel_mfcc = ["mfcc", "mel"]
"""
"""A search of tiny models on two cheap maps: only mel and mfcc are extracted, and no scalars
(tracing their graph would take most of a tiny search's time)."""

WORKER_IDS = ("tuner0", "tuner1")
DISTRIBUTED_TIMEOUT_S = 600
"""Generous: three TensorFlow processes share the test machine's cores."""


# ----------------------------------------------------------------------------- the [tune] section

def test_the_default_space_round_trips_and_old_pipelines_without_tune_still_load(tmp_path):
    pipeline = PipelineConfig()
    assert parse_config(dump_config(pipeline)) == pipeline
    custom = parse_config(TINY_TUNE)
    assert parse_config(dump_config(custom)) == custom
    assert custom.tune.map_sets == {"mel": ("mel",), "mel_mfcc": ("mfcc", "mel")}
    assert custom.tune.searched_maps == ("mel", "mfcc")  # channel order, whatever the sets' order
    old = tmp_path / "old.toml"
    old.write_text('name = "old"\n[train]\nmodels = ["cnn8"]\n')
    assert load_config(old).tune == TuneConfig()


@pytest.mark.parametrize("values, message", [
    ({"dropout": [0.1, 1.0]}, "dropout must lie in [0.0, 1.0), got [0.1, 1.0]"),
    ({"dropout": [0.4, 0.1]}, "dropout must be [low, high] with low <= high, got [0.4, 0.1]"),
    ({"learning_rate": [0, 1e-3]}, "learning_rate low must be > 0, got 0"),
    ({"p_cutmix": [0.0, 0.7]}, "p_cutmix high + p_mixup high must be <= 1"),
    ({"warmup_epochs": [0, 1.5]}, "warmup_epochs must be a [low, high] pair of integers, got [0, 1.5]"),
    ({"model_widths": [0.5, 0]}, "model_widths entries must be > 0, got 0"),
    ({"batch_sizes": []}, "batch_sizes must be a non-empty list of choices, got []"),
    ({"map_sets": {"x": ["mel", "stft"]}}, "map_sets.x: maps has unknown names ['stft']"),
    ({"map_sets": {"a b": ["mel"]}}, "map_sets name must be letters, digits, _ or -, got 'a b'"),
    ({"tuner": "grid"}, "tuner must be one of ['hyperband', 'bayesian', 'random'], got 'grid'"),
    ({"model": "resnet"}, "model must be one of ['cnn8', 'vgg', 'temporal'], got 'resnet'"),
    ({"max_trials": 0}, "max_trials must be an integer > 0, got 0"),
    ({"hyperband_factor": 1}, "hyperband_factor must be an integer >= 2, got 1"),
])
def test_bad_search_spaces_are_echoed(values, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"tune": values}, source="p.toml")
    assert str(err.value).startswith("p.toml: [tune] ")
    assert message in str(err.value)


def test_train_dropouts_are_validated():
    assert config_from_dict({"train": {"dropouts": {"vgg": 0.25}}}).train.dropouts == {"vgg": 0.25}
    with pytest.raises(ConfigError, match=r"dropouts.cnn8 must be in \[0, 1\), got 1.5"):
        config_from_dict({"train": {"dropouts": {"cnn8": 1.5}}})
    with pytest.raises(ConfigError, match=r"dropouts has unknown models \['resnet'\]"):
        config_from_dict({"train": {"dropouts": {"resnet": 0.1}}})


# ----------------------------------------------------------------------------- the HyperModels

def _tiny_pipeline() -> PipelineConfig:
    return parse_config(TINY_TUNE)


@pytest.mark.parametrize("name", ["cnn8", "vgg"])
def test_build_feeds_the_chosen_maps_out_of_all_extracted_ones(name, tmp_path):
    pipeline = PipelineConfig()  # extracts all nine maps
    model_hp = BreathHyperModel(name, pipeline)
    hp = kt.HyperParameters()
    model_hp.declare_hyperparameters(hp)
    hp.values.update({hypermodel.MAPS: "mel", hypermodel.WIDTH: 0.125, hypermodel.DROPOUT: 0.25})
    model = model_hp.build(hp)
    assert model.input["spectral"].shape[-1] == len(MAP_NAMES)
    net = model.get_layer(name)  # what fit adapts the scalar normalisation of
    assert net.input["spectral"].shape[-1] == 3  # mel, mel_delta, mel_delta2
    assert net.get_layer(SCALAR_NORM).input.shape[-1] == 39
    assert model.get_layer("select_maps").channels == [0, 1, 2]
    assert max(layer.rate for layer in net.layers if isinstance(layer, keras.layers.SpatialDropout2D)) == 0.25
    rng = np.random.default_rng(0)
    x = {"spectral": rng.standard_normal((2, 128, 63, 9)).astype("float32"),
         "scalars": rng.standard_normal((2, 39)).astype("float32")}
    path = tmp_path / "trial.keras"
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_a_trial_starts_from_fits_weights_whatever_this_process_built_before():
    """A resumed search reruns a trial as the uninterrupted one ran it, and ``fit`` its winner."""
    pipeline = _tiny_pipeline()
    model_hp = BreathHyperModel("cnn8", pipeline)
    hp = kt.HyperParameters()
    model_hp.declare_hyperparameters(hp)
    first = model_hp.build(hp).get_layer("cnn8").get_weights()
    keras.random.uniform((3,))  # what earlier trials drew
    model_hp.build(hp)
    again = model_hp.build(hp).get_layer("cnn8").get_weights()
    keras.utils.set_random_seed(pipeline.data.seed)  # as fit does before its first model
    fitted = train.new_model("cnn8", model_hp.trial_pipeline(hp.values)).get_weights()
    for weights in (again, fitted):
        assert len(weights) == len(first)
        for a, b in zip(first, weights):
            np.testing.assert_array_equal(a, b)


MIRRORED_BUILD = """
import json, sys
import keras, keras_tuner as kt
from tfbreath import distribute
from tfbreath.config import parse_config
from tfbreath.hypermodel import BreathHyperModel
distribute.use_logical_cpus(2)
strategy = distribute.make_strategy("mirrored")
model_hp = BreathHyperModel("cnn8", parse_config(sys.stdin.read()))
hp = kt.HyperParameters()
model_hp.declare_hyperparameters(hp)
with strategy.scope():  # where KerasTuner builds a trial's model
    net = model_hp.build(hp).get_layer("cnn8")
print(json.dumps([layer.synchronized for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]))
"""
"""Builds a trial under a mirrored strategy of two logical CPUs (they must be made before
TensorFlow starts, which this pytest process may have done)."""


def test_a_trial_built_under_several_replicas_synchronises_its_batch_norm_as_fit_does():
    done = subprocess.run([sys.executable, "-c", MIRRORED_BUILD], input=TINY_TUNE, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=DISTRIBUTED_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    synchronized = json.loads(done.stdout.strip().splitlines()[-1])
    assert synchronized and all(synchronized), synchronized


def test_a_pipelines_member_maps_give_way_to_the_trials_map_set():
    pipeline = config_from_dict({"features": {"maps": ["mel", "mfcc", "lpc"]},
                                 "train": {"member_maps": {"cnn8": ["lpc"], "vgg": ["mfcc"]}},
                                 "tune": {"map_sets": {"mel": ["mel"], "both": ["mel", "mfcc"]}}})
    assert hypermodel.extraction_pipeline(pipeline).features.maps == ("mel", "mfcc")
    model_hp = BreathHyperModel("cnn8", pipeline)
    hp = kt.HyperParameters()
    model_hp.declare_hyperparameters(hp)
    hp.values.update({hypermodel.MAPS: "both", hypermodel.WIDTH: 0.125})
    net = model_hp.build(hp).get_layer("cnn8")
    assert net.input["spectral"].shape[-1] == 2 and "select_maps" not in [layer.name for layer in net.layers]
    trial = model_hp.trial_pipeline(hp.values)
    assert trial.features.maps == ("mel", "mfcc") and trial.train.member_maps == {}


def test_ranges_become_floats_ints_log_or_fixed_hyperparameters():
    pipeline = config_from_dict({"tune": {"p_cutmix": [0, 1], "p_mixup": [0, 0], "model_widths": [1, 0.5]}})
    hp = kt.HyperParameters()
    BreathHyperModel("cnn8", pipeline).declare_hyperparameters(hp)
    space = {entry.name: entry for entry in hp.space}
    assert isinstance(space["p_cutmix"], kt.engine.hyperparameters.Float)  # integers in a float knob
    assert isinstance(space["p_mixup"], kt.engine.hyperparameters.Fixed) and hp.values["p_mixup"] == 0.0
    assert isinstance(space["warmup_epochs"], kt.engine.hyperparameters.Int)
    assert space["learning_rate"].sampling == "log" and space["dropout"].sampling == "linear"
    assert space["model_width"].values == [1.0, 0.5]


def test_a_trials_values_become_a_pipeline_fit_accepts():
    model_hp = BreathHyperModel("vgg", _tiny_pipeline())
    values = {"model_width": 0.0625, "dropout": 0.3, "maps": "mel_mfcc", "learning_rate": 5e-4,
              "weight_decay": 2e-5, "p_cutmix": 0.5, "p_mixup": 0.25, "warmup_epochs": 1, "batch_size": 8,
              "tuner/epochs": 3}
    pipeline = model_hp.trial_pipeline(values)
    assert pipeline.features.maps == ("mfcc", "mel")
    assert pipeline.train.models == ("vgg",) and pipeline.train.epochs == 3
    assert pipeline.train.learning_rates["vgg"] == 5e-4 and pipeline.train.dropouts == {"vgg": 0.3}
    assert (pipeline.augment.p_cutmix, pipeline.augment.p_mixup, pipeline.augment.warmup_epochs) == (0.5, 0.25, 1)
    assert pipeline.data.batch_size == 8
    assert parse_config(dump_config(pipeline)) == pipeline
    with pytest.raises(ConfigError, match="model must be one of"):
        BreathHyperModel("resnet", _tiny_pipeline())


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_every_tuner_maximises_the_validation_accuracy(tuner, tmp_path):
    """The search keeps its highest ``val_accuracy`` (the tiny searches' trials tie, so their "best"
    cannot show the direction)."""
    pipeline = with_overrides(_tiny_pipeline(), "tune", tuner=tuner)
    made = tune.make_tuner(BreathHyperModel("cnn8", pipeline), pipeline, tmp_path)
    assert (made.oracle.objective.name, made.oracle.objective.direction) == (tune.OBJECTIVE, "max")


def test_the_best_trial_is_the_highest_finished_score_ties_going_to_the_lowest_id(tmp_path):
    """Whatever order the trials were reloaded in; ids compare as numbers ("2" before "10")."""
    pipeline = _tiny_pipeline()
    hp = kt.HyperParameters()
    BreathHyperModel("cnn8", pipeline).declare_hyperparameters(hp)
    scores = {"9": 0.5, "10": 0.75, "2": 0.75, "3": 0.9, "4": None}  # 3 was interrupted, 4 failed
    status = {"3": "RUNNING", "4": "FAILED"}
    for order in (["10", "9", "2", "3", "4"], ["4", "3", "2", "9", "10"]):
        made = tune.make_tuner(BreathHyperModel("cnn8", pipeline), pipeline, tmp_path / "_".join(order))
        for trial_id in order:
            trial = kt.engine.trial.Trial(hp.copy(), trial_id=trial_id, status=status.get(trial_id, "COMPLETED"))
            trial.score = scores[trial_id]
            made.oracle.trials[trial_id] = trial
        assert tune.write_summary(made, tmp_path / "_".join(order))["trial"] == "2", order
    assert tune.best_trial([]) is None


def test_a_search_past_its_cap_with_no_trial_to_rerun_is_finished():
    """Hyperband may run fewer trials than its cap, and a lower cap leaves fewer than none to run."""
    def tuner(remaining, *statuses):
        trials = {str(i): kt.engine.trial.Trial(kt.HyperParameters(), str(i), status)
                  for i, status in enumerate(statuses)}
        return types.SimpleNamespace(remaining_trials=remaining, oracle=types.SimpleNamespace(trials=trials))

    assert tune._search_finished(tuner(0, "COMPLETED", "FAILED"))
    assert tune._search_finished(tuner(-1, "COMPLETED", "COMPLETED", "COMPLETED"))
    assert not tune._search_finished(tuner(1, "COMPLETED"))
    assert not tune._search_finished(tuner(-1, "COMPLETED", "RUNNING", "COMPLETED"))  # interrupted: rerun it


# ----------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
    """A Kaggle-layout folder of synthetic clips and the tiny search pipeline."""
    root = tmp_path_factory.mktemp("tune")
    data_dir = write_synthetic_breath(root / "data", n_sessions=8, clips_per_session=4)
    pipeline = root / "tiny.toml"
    pipeline.write_text(TINY_TUNE)
    return data_dir, pipeline


def _trials(out):
    with open(SearchFolder(out).trials_file, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_search_writes_its_summary_and_best_pipeline_and_resumes(tiny_search, tmp_path, monkeypatch):
    data_dir, pipeline = tiny_search
    fits = []
    original_fit = BreathHyperModel.fit

    def counting_fit(self, hp, *args, **kwargs):
        fits.append(kwargs["epochs"])
        return original_fit(self, hp, *args, **kwargs)

    monkeypatch.setattr(BreathHyperModel, "fit", counting_fit)
    out = tmp_path / "search"
    common = ["--pipeline", str(pipeline), "--data", str(data_dir), "--out", str(out)]
    assert tune.main([*common, "--max-trials", "1"]) == 0  # "interrupted" after one trial
    assert len(fits) == 1
    assert tune.main([*common, "--max-trials", "2"]) == 0  # resumes: runs only the second
    assert len(fits) == 2
    assert tune.main([*common, "--max-trials", "2"]) == 0  # done: trains nothing
    assert fits == [2, 2]  # [tune] max_epochs per trial
    assert tune.main([*common, "--max-trials", "1"]) == 2  # fewer than it holds
    assert load_config(SearchFolder(out).pipeline_file).tune.max_trials == 2

    rows = _trials(out)
    assert [row["trial"] for row in rows] == ["0", "1"]
    assert all(row["status"] == "COMPLETED" and 0.0 <= float(row["val_accuracy"]) <= 1.0 for row in rows)
    assert [row["epochs"] for row in rows] == ["2", "2"]
    assert SearchFolder(out).objective_plot.stat().st_size > 0
    best = json.loads(SearchFolder(out).best_hyperparameters_file.read_text())
    assert best["val_accuracy"] == max(float(row["val_accuracy"]) for row in rows)
    chosen = best["hyperparameters"]
    tuned = load_config(SearchFolder(out).best_pipeline_file)
    assert tuned.name == "tiny_tuned"
    assert tuned.features.maps == parse_config(TINY_TUNE).tune.map_sets[chosen["maps"]]
    assert tuned.train.models == ("cnn8",) and tuned.train.model_width == chosen["model_width"]
    assert tuned.train.learning_rates["cnn8"] == chosen["learning_rate"]
    assert tuned.train.weight_decay == chosen["weight_decay"]
    assert tuned.train.dropouts == {"cnn8": chosen["dropout"]}
    assert (tuned.augment.p_cutmix, tuned.augment.p_mixup) == (chosen["p_cutmix"], chosen["p_mixup"])
    assert tuned.augment.warmup_epochs == chosen["warmup_epochs"] and tuned.data.batch_size == 8
    assert tuned.train.epochs == 2


def test_a_trial_interrupted_by_ctrl_c_is_rerun_by_the_same_command(tiny_search, tmp_path, monkeypatch):
    data_dir, pipeline = tiny_search
    trained = []
    original_fit = BreathHyperModel.fit

    def interrupted_fit(self, hp, *args, **kwargs):
        trained.append(dict(hp.values))
        if len(trained) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the last trial
        return original_fit(self, hp, *args, **kwargs)

    monkeypatch.setattr(BreathHyperModel, "fit", interrupted_fit)
    out = tmp_path / "search"
    command = ["--pipeline", str(pipeline), "--data", str(data_dir), "--out", str(out), "--max-trials", "2",
               "--max-epochs", "1"]
    with pytest.raises(KeyboardInterrupt):
        tune.main(command)
    assert json.loads((out / SEARCH_PROJECT / "trial_1" / "trial.json").read_text())["status"] == "RUNNING"
    assert tune.main(command) == 0
    assert len(trained) == 3 and trained[2] == trained[1]  # trial 1 again, with its values
    assert [row["status"] for row in _trials(out)] == ["COMPLETED", "COMPLETED"]


def test_cli_errors_are_one_line(tiny_search, tmp_path, capsys, monkeypatch):
    data_dir, pipeline = tiny_search
    out = tmp_path / "search"
    common = ["--pipeline", str(pipeline), "--data", str(data_dir), "--out", str(out)]
    assert tune.main([*common, "--tuner", "grid"]) == 2
    said = capsys.readouterr().err
    assert "error: [tune] tuner must be one of ['hyperband', 'bayesian', 'random'], got 'grid'" in said
    SearchFolder(out).claim(tune.resolve(tune._parse_args(common))[0], tune._uncapped, [])
    assert tune.main([*common, "--max-epochs", "5"]) == 2
    assert "holds a search of a different pipeline" in capsys.readouterr().err
    monkeypatch.setenv(tune.ORACLE_IP_ENV, "127.0.0.1")
    monkeypatch.delenv(tune.ORACLE_PORT_ENV, raising=False)
    monkeypatch.setenv(tune.TUNER_ID_ENV, "tuner0")
    assert tune.main(common) == 2
    assert "$KERASTUNER_ORACLE_PORT not" in capsys.readouterr().err


def test_a_search_is_claimed_once_its_data_is_read_and_then_refuses_other_clips(tiny_search, tmp_path, capsys,
                                                                                 monkeypatch):
    """Resuming with another data folder would mix its trials with the first one's."""
    data_dir, pipeline = tiny_search
    monkeypatch.setattr(kt.Tuner, "search", lambda self, *args, **kwargs: None)  # claims, trains nothing
    out = tmp_path / "search"
    common = ["--pipeline", str(pipeline), "--out", str(out)]
    no_csv = tmp_path / "typo"
    no_csv.mkdir()
    assert tune.main([*common, "--data", str(no_csv)]) == 2  # no train.csv
    assert not SearchFolder(out).pipeline_file.exists()  # so the corrected command is not refused
    assert tune.main([*common, "--data", str(data_dir)]) == 2  # no trial finished: nothing ran
    assert "no trial finished" in capsys.readouterr().err
    assert SearchFolder(out).clips_file.read_text().splitlines()[0] == "file,session,label"
    other = write_synthetic_breath(tmp_path / "other", n_sessions=6, clips_per_session=4)
    assert tune.main([*common, "--data", str(other)]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1].startswith(f"error: {out}: holds trials run on other clips (8 of its clips are not among these")
    assert len(said[-1].split("error: ")) == 2


def test_clips_that_do_not_decode_or_trials_that_all_fail_are_one_line_errors(tiny_search, tmp_path, capsys,
                                                                               monkeypatch):
    data_dir, pipeline = tiny_search
    empty = tmp_path / "empty"
    shutil.copytree(data_dir, empty)
    for wav in (empty / "train").glob("*.wav"):
        wav.write_bytes(b"")
    out = tmp_path / "search"
    common = ["--pipeline", str(pipeline), "--out", str(out)]
    assert tune.main([*common, "--data", str(empty)]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1].startswith(f"error: {empty}: 0 of the 24 training clips decode, none of them I or E"), said[-1]
    assert not SearchFolder(out).pipeline_file.exists()  # nothing blocks the corrected command

    def failing_fit(self, hp, *args, **kwargs):
        raise ValueError("no val_accuracy today")

    monkeypatch.setattr(BreathHyperModel, "fit", failing_fit)
    assert tune.main([*common, "--data", str(data_dir), "--max-trials", "4"]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1] == (f"error: {data_dir}: 3 trials in a row failed, the last with ValueError: no val_accuracy "
                        f"today (see the trial messages above)"), said[-1]


def test_a_file_cache_serves_no_other_splits_features(tiny_search, tmp_path):
    """A second search with another seed (another split) on the same ``[data] cache`` file."""
    data_dir, pipeline_file = tiny_search
    pipeline = with_overrides(load_config(pipeline_file), "data", cache=str(tmp_path / "cache" / "features"))

    def features(pipeline):
        sets = tune._feature_sets(pipeline, tune._split(pipeline, data_dir), data_dir)
        return [np.concatenate([x["spectral"] for x, _ in s.batches(8)]) for s in sets]

    features(pipeline)  # seed 42's split, cached
    other = with_overrides(pipeline, "data", seed=7)
    for cached, fresh in zip(features(other), features(with_overrides(other, "data", cache="memory"))):
        np.testing.assert_array_equal(cached, fresh)


def test_an_out_that_is_a_file_or_another_search_is_refused_before_anything_is_written(tiny_search, tmp_path,
                                                                                         capsys, monkeypatch):
    _, pipeline = tiny_search
    monkeypatch.delenv(run_folder.DATA_ENV, raising=False)  # no data: the demo's synthetic clips
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert tune.main(["--pipeline", str(pipeline), "--out", str(a_file)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {a_file}: is a file, not a folder"
    out = tmp_path / "search"
    SearchFolder(out).claim(tune.resolve(tune._parse_args(["--pipeline", str(pipeline), "--out", str(out)]))[0],
                            tune._uncapped, [])  # that wrote the demo's clips of seed 42 into the search
    clips = {p: p.read_bytes() for p in sorted((out / run_folder.SYNTHETIC_DATA_DIR).rglob("*")) if p.is_file()}
    assert tune.main(["--pipeline", str(pipeline), "--out", str(out), "--seed", "7"]) == 2
    assert "holds a search of a different pipeline" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in clips} == clips  # the refused run wrote none of its own


def test_the_demo_search_says_what_it_runs_in_its_own_default_folder(tiny_search, tmp_path, capsys, monkeypatch):
    _, pipeline = tiny_search
    monkeypatch.delenv(run_folder.DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    resolved, data_dir, out = tune.resolve(tune._parse_args(["--pipeline", str(pipeline)]))
    assert out == run_folder.RUNS_DIR / "tiny_synthetic_tune" and data_dir == out / run_folder.SYNTHETIC_DATA_DIR
    said = capsys.readouterr().out
    assert "with the demo's early_stopping_patience = 8, cache = memory in place of the pipeline's" in said, said
    assert (resolved.train.early_stopping_patience, resolved.data.cache) == (8, "memory")
    assert resolved.tune == parse_config(TINY_TUNE).tune  # what sets a trial's epochs, width, batch and warm-up


# ----------------------------------------------------------------------------- chief + workers

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_chief_and_two_workers_share_one_search(tiny_search, tmp_path):
    data_dir, pipeline = tiny_search
    out = tmp_path / "distributed"
    port = _free_port()
    command = [sys.executable, "-m", "tfbreath.tune", "--pipeline", str(pipeline), "--data", str(data_dir),
               "--out", str(out), "--max-trials", "2", "--max-epochs", "1"]
    processes = {}
    try:
        for tuner_id in ("chief", *WORKER_IDS):
            env = {**os.environ, tune.TUNER_ID_ENV: tuner_id, tune.ORACLE_IP_ENV: "127.0.0.1",
                   tune.ORACLE_PORT_ENV: str(port), "TF_CPP_MIN_LOG_LEVEL": "2"}
            processes[tuner_id] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT, text=True)
        logs = {tuner_id: process.communicate(timeout=DISTRIBUTED_TIMEOUT_S)[0]
                for tuner_id, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for tuner_id, process in processes.items():
        assert process.returncode == 0, f"{tuner_id} failed:\n{logs[tuner_id][-3000:]}"
    assert "serving the oracle" in logs["chief"]
    for worker in WORKER_IDS:
        assert "val_accuracy:" in logs[worker], f"{worker} ran no trial:\n{logs[worker][-3000:]}"
        assert (out / SEARCH_PROJECT / f"{worker}.json").is_file()  # saved when it ends a trial
    rows = _trials(out)  # written by the chief, from its oracle
    assert [row["status"] for row in rows] == ["COMPLETED", "COMPLETED"]
    assert load_config(SearchFolder(out).best_pipeline_file).train.models == ("cnn8",)


def test_a_continued_trial_schedules_its_own_epochs_and_stops_on_the_best_accuracy(monkeypatch):
    """Hyperband continues a trial from ``initial_epoch``: the learning-rate schedule spans the
    epochs this call trains, and early stopping keeps the highest ``val_accuracy``."""
    trial = BreathHyperModel("cnn8", _tiny_pipeline())
    hp = kt.HyperParameters()
    trial.declare_hyperparameters(hp)
    seen = {}
    monkeypatch.setattr(hypermodel, "prepare", lambda model, name, pipeline, train_set, steps, **kw:
                        seen.setdefault("steps", steps))
    monkeypatch.setattr(hypermodel, "augmented_batches", lambda pipeline, train_set, batch_size:
                        ("batches", keras.callbacks.Callback()))

    class _Model:
        distribute_strategy = tf.distribute.get_strategy()

        def get_layer(self, name):
            return None

        def fit(self, batches, validation_data, epochs, initial_epoch, callbacks, **kwargs):
            seen["callbacks"] = callbacks

    class _Clips:
        kept_examples = [None] * 40

        def batches(self, batch_size):
            return tf.data.Dataset.range(1)

    trial.fit(hp, _Model(), _Clips(), _Clips(), epochs=5, initial_epoch=3)
    batch = hp.values[hypermodel.BATCH_SIZE]
    assert seen["steps"] == -(-40 // batch) * (5 - 3)
    stopper = next(c for c in seen["callbacks"] if isinstance(c, keras.callbacks.EarlyStopping))
    assert (stopper.monitor, stopper.mode) == ("val_accuracy", "max")
