"""Pipeline configuration: TOML parsing, defaults, and validation messages that echo the value."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from conftest import REPO
from tfbreath.config import (MAX_SAMPLE_RATE, MAX_SEED, AugmentConfig, ConfigError, FeatureConfig, PipelineConfig,
                             config_from_dict, dump_config, first_difference, load_config, parse_config,
                             with_overrides)


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
    ("features", {"band_limit_hz": -1.0}, "band_limit_hz must be a number 0.0 (off) or > 0, got -1.0"),
    ("audio", {"sample_rate": 96000}, "sample_rate must be in [4000, 48000], got 96000"),
    ("data", {"validation_fraction": 1.5}, "validation_fraction must be in (0, 1), got 1.5"),
    ("features", {"maps": ["mel", "mel"]}, "maps has duplicates, got ['mel', 'mel']"),
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


# ---------------------------------------------------------------------------------------------
# Wrong types and cross-section limits (issue 18): one ConfigError echoing the value
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("section, values, message", [
    ("features", {"n_mels": "128"}, "n_mels must be an integer > 0, got '128'"),
    ("features", {"n_mels": True}, "n_mels must be an integer > 0, got True"),
    ("features", {"n_fft": 512.0}, "n_fft must be an integer > 0, got 512.0"),
    ("train", {"epochs": 10.5}, "epochs must be an integer > 0, got 10.5"),
    ("features", {"fmax": "4500"}, "fmax must be a number > 0, got '4500'"),
    ("features", {"fmax": float("nan")}, "fmax must be a number > 0, got nan"),
    ("features", {"maps": "mel"}, "maps must be a list of map names, got 'mel'"),
    ("features", {"maps": ["mel", 3]}, "maps must be a list of map names, got ['mel', 3]"),
    ("features", {"scalars": "yes"}, "scalars must be true or false, got 'yes'"),
    ("features", {"scalars": 1}, "scalars must be true or false, got 1"),
    ("audio", {"sample_rate": 16000.0}, "sample_rate must be an integer in [4000, 48000], got 16000.0"),
    ("audio", {"duration_s": "1"}, "duration_s must be a number > 0, got '1'"),
    ("data", {"cache": 0}, "cache must be 'memory', 'none' or a file path, got 0"),
    ("data", {"cache": ""}, "cache must be 'memory', 'none' or a file path, got ''"),
    ("audio", 5, "[audio] must be a table, got 5"),
    ("data", {"seed": -1}, "seed must be in [0, 4294967295], got -1"),
    ("data", {"seed": 2**40}, "seed must be in [0, 4294967295], got 1099511627776"),
    ("data", {"seed": 1.5}, "seed must be an integer in [0, 4294967295], got 1.5"),
    ("data", {"validation_fraction": "0.2"}, "validation_fraction must be a number in (0, 1), got '0.2'"),
    ("augment", {"p_mixup": "0.1"}, "p_mixup must be a number in [0, 1], got '0.1'"),
    ("train", {"models": "cnn8"}, "models must be a list of model names, got 'cnn8'"),
    ("train", {"learning_rates": 0.001}, "learning_rates must be a table of model = number, got 0.001"),
    ("train", {"learning_rates": {"cnn8": "fast", "vgg": 1e-3}},
     "learning_rates.cnn8 must be a number > 0, got 'fast'"),
    ("train", {"dropouts": {"cnn8": "0.3"}}, "dropouts.cnn8 must be a number in [0, 1), got '0.3'"),
    ("train", {"patiences": {"temporal": 2.5}}, "patiences.temporal must be an integer > 0, got 2.5"),
    ("train", {"patiences": {"temporal": 0}}, "patiences.temporal must be > 0, got 0"),
    ("train", {"patiences": {"rbf": 3}}, "patiences has unknown models ['rbf']; choose from ['cnn8', 'vgg', 'temporal']"),
    ("train", {"dropouts": {"pooled": 0.1}},
     "dropouts has unknown models ['pooled']; choose from ['cnn8', 'vgg', 'temporal']"),
    ("train", {"learning_rates": {"cnn8": 1e-3, "vgg": 1e-3, "temporal": 1e-3, "vggg": 5.0}},
     "learning_rates has unknown models ['vggg']; choose from ['cnn8', 'vgg', 'temporal']"),
    ("train", {"precision": ["auto"]}, "precision must be one of ['auto', 'float32', 'mixed_bfloat16', "
                                       "'mixed_float16'], got ['auto']"),
    ("train", {"clip_scope": "layer"}, "clip_scope must be one of ['variable', 'global'], got 'layer'"),
    ("train", {"ema_momentum": "0.99"}, "ema_momentum must be a number in [0, 1), got '0.99'"),
    ("features", {"hop_length": 1024}, "hop_length must be <= n_fft (512), got 1024"),
    ("features", {"n_mfcc": 200}, "n_mfcc must be <= n_mels (128), got 200"),
    ("tune", {"model_widths": ["0.5"]}, "model_widths entries must be a number > 0, got '0.5'"),
    ("tune", {"map_sets": {"a": "mel"}}, "map_sets.a must be a list of maps, got 'mel'"),
    ("train", {"member_maps": ["mel"]}, "member_maps must be a table of model = [maps], got ['mel']"),
    ("train", {"member_maps": {"cnn8": "mel"}}, "member_maps.cnn8 must be a list of map names, got 'mel'"),
    ("train", {"member_maps": {"cnn8": ["mel", "stft"]}}, "member_maps.cnn8 has unknown names ['stft']"),
    ("train", {"member_maps": {"cnn8": []}}, "member_maps.cnn8 must name at least one map, got []"),
    ("train", {"member_maps": {"pooled": ["mel"]}},
     "member_maps has unknown models ['pooled']; choose from ['cnn8', 'vgg', 'temporal']"),
])
def test_wrong_types_are_echoed(section, values, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({section: values}, source="p.toml")
    assert message in str(err.value)
    assert str(err.value).startswith(f"p.toml: [{section}]")
    assert "\n" not in str(err.value)


def _wrong_type(default):
    """A value of another type than a field's default: what a TOML typo gives."""
    if isinstance(default, str):
        return 7
    return "x"


SECTIONS = {f.name: type(getattr(PipelineConfig(), f.name)) for f in dataclasses.fields(PipelineConfig)
            if f.name != "name"}


@pytest.mark.parametrize("section, cls", SECTIONS.items())
def test_every_field_rejects_a_wrong_type(section, cls):
    for field in dataclasses.fields(cls):
        default = getattr(cls(), field.name)
        bad = _wrong_type(default)
        with pytest.raises(ConfigError) as err:
            config_from_dict({section: {field.name: bad}}, source="p.toml")
        message = str(err.value)
        assert field.name in message and repr(bad) in message, (field.name, message)


@pytest.mark.parametrize("values, message", [
    ({"audio": {"duration_s": 0.001}}, "[audio] duration_s must be >= 0.128 s (2048 samples at 16000 Hz"),
    ({"audio": {"duration_s": 0.04}, "features": {"hop_length": 64}},
     "[audio] duration_s must be >= 0.05 s (800 samples at 16000 Hz"),
    ({"features": {"fmax": 9000.0}},
     "[features] fmax must be <= the Nyquist frequency of [audio] sample_rate (8000.0 Hz), got 9000.0"),
    ({"audio": {"sample_rate": 8000}, "features": {"fmax": 4000.0}},
     "[features] scalars = true needs [audio] sample_rate > 12800 Hz"),
    ({"features": {"band_limit_hz": 9000.0}},
     "[features] band_limit_hz must be 0.0 (off) or in (200.0, 8000.0] Hz"),
    ({"features": {"band_limit_hz": 150.0}}, "got 150.0"),
    ({"features": {"maps": ["mel", "mfcc"]}, "train": {"member_maps": {"cnn8": ["mel", "lpc"]}}},
     "[train] member_maps.cnn8 names maps that [features] maps does not extract: ['lpc']; "
     "extracted: ['mel', 'mfcc']"),
    ({"features": {"n_mels": 6, "n_mfcc": 2}, "train": {"models": ["cnn8", "pooled"]}},
     "[features] n_mels must be >= 8 when [train] models has ['pooled'] and maps has ['modulation'] (they read "
     "its first 8 rows), got 6"),
])
def test_cross_section_limits_name_the_bound(values, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(values, source="p.toml")
    assert str(err.value).startswith("p.toml: ")
    assert message in str(err.value), str(err.value)


def test_a_member_without_its_own_patience_uses_the_recipes(tmp_path):
    pipeline = config_from_dict({"train": {"early_stopping_patience": 8, "patiences": {"temporal": 30}}})
    assert (pipeline.train.patience("temporal"), pipeline.train.patience("cnn8")) == (30, 8)
    path = tmp_path / "p.toml"
    path.write_text(dump_config(pipeline))
    assert load_config(path) == pipeline


def test_member_maps_are_read_as_tuples_and_written_back_to_an_equal_config(tmp_path):
    pipeline = config_from_dict({"train": {"member_maps": {"cnn8": ["mfcc", "mel"]}}})
    assert pipeline.train.member_maps == {"cnn8": ("mfcc", "mel")}  # the order is the channels' order
    path = tmp_path / "p.toml"
    path.write_text(dump_config(pipeline))
    assert load_config(path) == pipeline


def test_the_shortest_clip_the_features_take_is_accepted():
    pipeline = config_from_dict({"audio": {"duration_s": 0.128}})
    assert pipeline.audio.num_samples == 2048 and pipeline.num_frames == 9
    low_rate = config_from_dict({"audio": {"sample_rate": 8000}, "features": {"scalars": False, "fmax": 4000.0}})
    assert low_rate.features.fmax == 4000.0


def test_no_message_shows_a_bare_bool_or_a_spelled_out_string():
    for values in ({"features": {"n_mels": True, "n_mfcc": 40}}, {"features": {"maps": "mel"}},
                   {"train": {"models": "vgg"}}):
        with pytest.raises(ConfigError) as err:
            config_from_dict(values, source="p.toml")
        assert "(True)" not in str(err.value) and "['m', 'e', 'l']" not in str(err.value)
        assert "['v', 'g', 'g']" not in str(err.value)


def test_unreadable_pipeline_files_are_one_line_errors(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.toml: not UTF-8 text \(byte 0xe9 at offset 11\)"):
        load_config(latin)
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"folder\.toml: is a folder, not a pipeline file"):
        load_config(folder)


def test_pipeline_name_must_be_a_folder_name():
    with pytest.raises(ConfigError, match=r"name must be a non-empty folder name .*got 5"):
        config_from_dict({"name": 5}, source="p.toml")
    with pytest.raises(ConfigError, match=r"name must be a non-empty folder name .*got 'a/b'"):
        config_from_dict({"name": "a/b"}, source="p.toml")
    for outside in (".", ".."):  # saved_models/<name> would be saved_models itself or its parent
        with pytest.raises(ConfigError, match=rf"name must be a non-empty folder name .*got '{re.escape(outside)}'"):
            config_from_dict({"name": outside}, source="p.toml")


@pytest.mark.parametrize("toml", ['[features]\nn_mels = "128"\n', "[train]\nepochs = 10.5\n",
                                  "[audio]\nduration_s = 0.001\n", '[features]\nmaps = "mel"\n',
                                  '[features]\nscalars = "yes"\n', "[features]\nfmax = 9000.0\n"])
def test_fit_reports_a_bad_pipeline_on_one_error_line(tmp_path, capsys, toml):
    from tfbreath import fit

    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    # --data names no folder: a pipeline wrongly accepted fails there, fast, with another message.
    argv = ["--pipeline", str(bad), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]
    assert fit.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: ["), err
    assert not (tmp_path / "run").exists()


def test_first_difference_names_the_first_feature_field_that_differs():
    base = PipelineConfig()
    assert first_difference(base, with_overrides(base, "train", epochs=3)) is None  # training may differ
    assert first_difference(base, with_overrides(base, "features", fmax=3000.0)) == "[features] fmax: 4500.0 vs 3000.0"
    assert first_difference(base, with_overrides(base, "train", epochs=3), sections=("train",)) == \
        "[train] epochs: 140 vs 3"
    assert first_difference(base, with_overrides(base, "audio", duration_s=2.0)) == "[audio] duration_s: 1.0 vs 2.0"


DEFAULT_FEATURES = FeatureConfig()
DEFAULT_AUGMENT = AugmentConfig()


def _above(value: float) -> float:
    """The next float above ``value``: one step of round-off, as a tuner's arithmetic leaves."""
    return math.nextafter(value, math.inf)


@pytest.mark.parametrize("section, values", [
    ("audio", {"sample_rate": MAX_SAMPLE_RATE}),
    ("data", {"seed": 0}),
    ("data", {"seed": MAX_SEED}),
    ("features", {"level_rms": 1.0}),
    ("features", {"band_limit_hz": PipelineConfig().audio.sample_rate / 2}),  # the Nyquist frequency
    ("features", {"hop_length": DEFAULT_FEATURES.n_fft}),
    ("features", {"n_mels": DEFAULT_FEATURES.n_mfcc}),
    ("augment", {"freq_mask_width": 1, "time_mask_width": 1}),
    ("augment", {"p_cutmix": _above(DEFAULT_AUGMENT.p_cutmix),  # sums to 1 up to round-off
                 "p_mixup": _above(DEFAULT_AUGMENT.p_mixup)}),
    ("train", {"pseudo_labels": "soft", "folds": 2}),
    ("tune", {"p_cutmix": [0.3, 0.3]}),  # low == high fixes the value
])
def test_values_on_a_closed_bound_are_accepted(section, values):
    """Every closed end of a documented range (``[a, b]``, ``<=``, ``>=``) takes its bound itself."""
    pipeline = config_from_dict({section: values})
    assert {key: getattr(getattr(pipeline, section), key) for key in values} == \
        {key: tuple(v) if isinstance(v, list) else v for key, v in values.items()}


@pytest.mark.parametrize("section, values, message", [
    ("data", {"validation_fraction": 0}, "validation_fraction must be in (0, 1), got 0"),
    ("data", {"validation_fraction": 1.0}, "validation_fraction must be in (0, 1), got 1.0"),
    ("train", {"ema_momentum": 1.0}, "ema_momentum must be in [0, 1), got 1.0"),
    ("augment", {"freq_mask_width": 0}, "freq_mask_width must be an integer >= 1, got 0"),
])
def test_values_on_an_open_bound_are_refused(section, values, message):
    """An open end of a range (``(0, 1)``, ``[0, 1)``, ``>= 1`` for an integer) refuses its bound."""
    with pytest.raises(ConfigError) as err:
        config_from_dict({section: values}, source="p.toml")
    assert message in str(err.value)


def test_a_pipeline_changed_in_every_section_is_dumped_and_read_back_equal():
    """``dump_config`` writes the name and every section, strings escaped (a Windows cache path)."""
    pipeline = config_from_dict({
        "name": "every_section", "audio": {"duration_s": 2.0}, "features": {"n_mels": 64},
        "data": {"cache": 'C:\\cache\\"breath"'}, "train": {"epochs": 3}, "augment": {"freq_masks": 2},
        "tune": {"map_sets": {"mel_only": ["mel"]}},
    })
    assert parse_config(dump_config(pipeline)) == pipeline


def test_with_overrides_ignores_none_and_prefixes_errors_with_the_section():
    """CLI flags left unset arrive as ``None`` and keep the pipeline's values."""
    base = PipelineConfig()
    assert with_overrides(base, "train", epochs=None) is base
    assert with_overrides(base, "train", epochs=None, model_width=0.5).train == \
        dataclasses.replace(base.train, model_width=0.5)
    with pytest.raises(ConfigError, match=r"^\[train\] epochs must be > 0, got 0$"):
        with_overrides(base, "train", epochs=0)
