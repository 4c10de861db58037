"""ICBHI pipeline configuration: defaults, TOML round trip, validation messages, task detection."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import REPO
from tfbreath.config import ConfigError, with_overrides
from tfbreath.icbhi.config import (IcbhiConfig, dump_icbhi_config, icbhi_config_from_dict, is_icbhi_pipeline,
                                   load_icbhi_config, parse_icbhi_config)

SHIPPED = REPO / "pipelines" / "icbhi_respirenet.toml"


def test_shipped_pipeline_equals_the_embedded_default():
    assert load_icbhi_config(SHIPPED) == IcbhiConfig()


def test_defaults_are_respirenets():
    config = IcbhiConfig()
    assert (config.audio.sample_rate, config.audio.band_low_hz, config.audio.band_high_hz,
            config.audio.filter_order, config.audio.cycle_s) == (4000, 50.0, 2000.0, 5, 7.0)
    assert config.audio.num_samples == 28000
    assert config.audio.highpass_only  # 2000 Hz is the Nyquist frequency of 4 kHz
    assert (config.model.backbone, config.model.dense_units, config.train.batch_size,
            config.train.momentum) == ("resnet34", 128, 64, 0.9)


def test_dump_parse_round_trip_of_a_changed_config():
    config = IcbhiConfig()
    config = with_overrides(config, "train", epochs=3, classes=2)
    config = with_overrides(config, "split", scheme="80_20", seed=7)
    config = with_overrides(config, "spectrogram", clip_blank=False, n_mels=32)
    config = with_overrides(config, "model", initial_weights='C:\\w "x".keras')
    text = dump_icbhi_config(config)
    assert parse_icbhi_config(text) == config
    assert parse_icbhi_config(text) != IcbhiConfig()
    assert 'task = "icbhi"' in text


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        IcbhiConfig().train.epochs = 3


def test_partial_toml_keeps_the_other_defaults():
    config = parse_icbhi_config('task = "icbhi"\n[padding]\nsmart = false\n')
    assert config.padding.smart is False
    assert config.audio == IcbhiConfig().audio


@pytest.mark.parametrize("section, values, message", [
    ("spectrogram", {"n_mels": 0}, "n_mels must be an integer >= 1, got 0"),
    ("audio", {"band_high_hz": 2500.0}, "band_high_hz must be a number in (band_low_hz = 50.0, Nyquist = 2000.0], got 2500.0"),
    ("audio", {"band_low_hz": 0.0}, "band_low_hz must be > 0, got 0.0"),
    ("split", {"scheme": "70_30"}, "scheme must be one of ['official', 'folds', '60_40', '80_20'], got '70_30'"),
    ("split", {"scheme": "60_40", "folds_file": "folds.txt"},
     "scheme 'folds' reads folds_file and only it does; got scheme '60_40' with folds_file 'folds.txt'"),
    ("split", {"scheme": "folds"}, "scheme 'folds' reads folds_file and only it does; got scheme 'folds' with "
                                   "folds_file ''"),
    ("padding", {"long_cycles": "vote"}, "long_cycles must be one of ['cut', 'windows'], got 'vote'"),
    ("spectrogram", {"input": "rgb"}, "input must be one of ['grey', 'image'], got 'rgb'"),
    ("spectrogram", {"image_scale": 0}, "image_scale must be"),
    ("augment", {"vtlp_alpha_min": 1.2}, "vtlp_alpha_max must be a number >= vtlp_alpha_min (1.2), got 1.1"),
    ("model", {"initial_weights": "a.keras", "imagenet_weights": "b.pth"},
     "give initial_weights or imagenet_weights, not both; got 'a.keras' and 'b.pth'"),
    ("train", {"class_weights": [0.1, 0.3]}, "class_weights must have one entry per class (4), got [0.1, 0.3]"),
    ("train", {"class_weights": [0.1, 0.3, -1, 0.3]}, "class_weights must be a list of numbers > 0, got [0.1, 0.3, -1, 0.3]"),
    ("train", {"select": "first"}, "select must be one of ['last', 'best'], got 'first'"),
    ("train", {"validation_fraction": 1.0}, "validation_fraction must be in (0, 1), got 1.0"),
    ("train", {"weight_decay": -1e-4}, "weight_decay must be a number >= 0, got -0.0001"),
    ("split", {"scheme": "80_20", "test_fold": -1}, "test_fold must be an integer >= 0, got -1"),
    ("train", {"classes": 3}, "classes must be one of [4, 2], got 3"),
    ("augment", {"speed_min": 1.2}, "speed_max must be a number >= speed_min (1.2), got 1.1"),
    ("augment", {"noise_probability": 1.5}, "noise_probability must be in [0, 1], got 1.5"),
    ("model", {"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
    ("model", {"backbone": "vgg"}, "backbone must be one of ['resnet34'], got 'vgg'"),
    # switches are true or false, a quoted "false" is not (it would read as on)
    ("padding", {"smart_test": "false"}, "smart_test must be true or false, got 'false'"),
    ("padding", {"smart": 1}, "smart must be true or false, got 1"),
    ("spectrogram", {"clip_blank": "no"}, "clip_blank must be true or false, got 'no'"),
    ("augment", {"concat": 0}, "concat must be true or false, got 0"),
    ("augment", {"balanced_sampler": "true"}, "balanced_sampler must be true or false, got 'true'"),
    ("train", {"device_finetune": "yes"}, "device_finetune must be true or false, got 'yes'"),
    # numbers are finite numbers: a quoted one is refused here, not compared with a float later
    ("audio", {"band_high_hz": "2000"}, "band_high_hz must be a number in (band_low_hz = 50.0, Nyquist = 2000.0], "
                                        "got '2000'"),
    ("spectrogram", {"fmin": "50"}, "fmin must be a number in [0, 2000.0), got '50'"),
    ("spectrogram", {"blank_level": "0.04"}, "blank_level must be a number in (0, 1), got '0.04'"),
    ("train", {"momentum": "0.9"}, "momentum must be a number in [0, 1), got '0.9'"),
    ("model", {"dropout": "0.5"}, "dropout must be a number in [0, 1), got '0.5'"),
    ("train", {"validation_fraction": "0.2"}, "validation_fraction must be a number in (0, 1), got '0.2'"),
    ("augment", {"speed_max": float("inf")}, "speed_max must be a number >= speed_min (0.9), got inf"),
    ("augment", {"noise_snr_db_max": float("inf")}, "noise_snr_db_max must be a number >= noise_snr_db_min (15.0), "
                                                    "got inf"),
    ("augment", {"noise_snr_db_min": "15"}, "noise_snr_db_min must be a number (in dB), got '15'"),
    ("augment", {"vtlp_alpha_max": float("inf")}, "vtlp_alpha_max must be a number >= vtlp_alpha_min (0.9), got inf"),
    ("train", {"weight_decay": float("inf")}, "weight_decay must be a number >= 0, got inf"),
    ("train", {"class_weights": [float("inf"), 1, 1, 1]}, "class_weights must be a list of numbers > 0, got [inf, "),
    ("train", {"classes": 4.0}, "classes must be one of [4, 2], got 4.0"),
])
def test_bad_values_are_echoed(section, values, message):
    with pytest.raises(ConfigError) as err:
        icbhi_config_from_dict({section: values}, source="p.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("p.toml: ")


def test_cross_section_checks():
    with pytest.raises(ConfigError, match=r"fmax must be <= the Nyquist frequency .* got 3000.0"):
        icbhi_config_from_dict({"spectrogram": {"fmax": 3000.0}})
    with pytest.raises(ConfigError, match="task must be 'icbhi', got 'breath'"):
        icbhi_config_from_dict({"task": "breath"})


def test_unknown_keys_and_sections_are_named():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['n_mel'\] in \[spectrogram\]"):
        icbhi_config_from_dict({"spectrogram": {"n_mel": 3}})
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['features'\]"):
        icbhi_config_from_dict({"features": {}})


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="pipeline file not found"):
        load_icbhi_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("task = \n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid TOML"):
        load_icbhi_config(bad)


def test_is_icbhi_pipeline(tmp_path):
    assert is_icbhi_pipeline(SHIPPED)
    assert not is_icbhi_pipeline(REPO / "pipelines" / "breath_phase.toml")
    assert not is_icbhi_pipeline(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("task = = 1")
    assert not is_icbhi_pipeline(broken)


def test_a_non_utf8_or_folder_pipeline_is_one_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'task = "icbhi"\nname = "\xff"\n')
    with pytest.raises(ConfigError, match=f"^{bad}: not UTF-8 text"):
        load_icbhi_config(bad)
    with pytest.raises(ConfigError, match=f"^{tmp_path}: is a folder"):
        load_icbhi_config(tmp_path)
