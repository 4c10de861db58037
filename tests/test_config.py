"""Pipeline configuration: TOML parsing, defaults, and validation messages that echo the value."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import REPO
from tfbreath.config import ConfigError, FeatureConfig, PipelineConfig, config_from_dict, load_config


def test_shipped_pipeline_equals_the_embedded_default():
    assert load_config(REPO / "pipelines" / "breath_phase.toml") == PipelineConfig()


def test_default_geometry_is_the_papers():
    pipeline = PipelineConfig()
    assert pipeline.audio.num_samples == 16000
    assert pipeline.num_frames == 63
    assert pipeline.features.n_scalars == 39


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PipelineConfig().features.n_mels = 3


def test_partial_toml_overrides_only_what_it_names(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[features]\nmaps = ["mel", "mfcc"]\nscalars = false\n')
    pipeline = load_config(path)
    assert pipeline.features.maps == ("mel", "mfcc")
    assert pipeline.features.n_scalars == 0
    assert pipeline.audio == PipelineConfig().audio


@pytest.mark.parametrize("section, values, message", [
    ("features", {"n_mels": 0}, "n_mels must be > 0, got 0"),
    ("features", {"maps": ["mel", "stft"]}, "maps has unknown names ['stft']"),
    ("features", {"n_fft": 500}, "n_fft must be a power of two, got 500"),
    ("audio", {"sample_rate": 96000}, "sample_rate must be in [4000, 48000], got 96000"),
    ("data", {"validation_fraction": 1.5}, "validation_fraction must be in (0, 1), got 1.5"),
])
def test_bad_values_are_echoed(section, values, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({section: values}, source="p.toml")
    assert message in str(err.value)
    assert str(err.value).startswith(f"p.toml: [{section}]")


def test_unknown_keys_sections_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nmels'\] in \[features\]"):
        config_from_dict({"features": {"nmels": 3}})
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['model'\]"):
        config_from_dict({"model": {}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[features\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="pipeline file not found"):
        load_config(tmp_path / "missing.toml")


def test_feature_config_accepts_any_subset_of_maps():
    assert FeatureConfig(maps=["lpc"]).maps == ("lpc",)
