"""ICBHI pipeline configuration: frozen dataclasses parsed from a ``task = "icbhi"`` TOML file.

Every default is RespireNet's value (paper, or its public code where the paper is silent), so
``IcbhiConfig()`` is the embedded default pipeline and ``pipelines/icbhi_respirenet.toml``
documents it. A TOML file overrides any subset, section by section; ``task = "icbhi"`` at the
top level is what tells ``tfbreath.fit`` to run this pipeline instead of the breathing-phase one.

Built with the public helpers of ``tfbreath.config`` (``require``, ``positive``,
``build_section``, ``dump_sections``), so errors read the same: ``n_mels must be > 0, got 0``,
and ``tfbreath.config.with_overrides(cfg, "train", epochs=3)`` works on an ``IcbhiConfig`` too.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from tfbreath.config import (PRECISIONS, ConfigError, boolean, build_section, check_sample_rate, choice,
                             dump_sections, in_range, integer, is_integer, is_number, positive, probability,
                             read_pipeline_text, require, typed)

TASK = "icbhi"
"""The top-level ``task`` value that marks an ICBHI pipeline file."""

SPLIT_SCHEMES = ("official", "folds", "60_40", "80_20")
"""``official``: the challenge's own list file; ``folds``: RespireNet's patient folds file
(``[split] folds_file``), fold ``test_fold`` tested; the others: seeded patient-wise splits."""

FOLDS_SCHEME = "folds"
"""The scheme that reads a RespireNet folds file (``[split] folds_file``)."""

RESPIRENET_TEST_FOLD = 4
"""The fold RespireNet's code tests on by default."""

BACKBONES = ("resnet34",)
"""CNN backbones the model side builds (RespireNet: ResNet-34)."""

CLASS_COUNTS = (4, 2)
"""4: normal / crackle / wheeze / both; 2: normal / abnormal."""

INPUTS = ("grey", "image")
"""``grey``: the [0, 1] dB mel spectrogram repeated into 3 channels; ``image``: RespireNet's
rendering (dB mel to 0-255, magma colour map to RGB, resized ``image_scale`` times, low
frequencies at the bottom, normalised by the training split's per-channel mean and std)."""

LONG_CYCLES = ("cut", "windows")
"""A cycle longer than ``cycle_s``: ``cut`` keeps its first ``cycle_s``; ``windows`` cuts it into
windows of ``cycle_s`` at most ``window_hop_s`` apart (``tfbreath.recording.window_starts``; each a
training example; at test time the windows vote, ``tfbreath.icbhi.dataset.CycleSet.per_cycle``)."""

SELECTIONS = ("last", "best")
"""Which stage-1 weights are kept: the last epoch's, or the epoch with the best ICBHI score on a
validation split of the training patients (``[train] validation_fraction``)."""


def _at_least(name: str, value: Any, low_name: str, low: Any) -> None:
    """The top of a range: a number >= its bottom ``low_name`` (already checked)."""
    typed(name, value, float, f">= {low_name} ({low!r})", lambda top: top >= low)


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """Per-recording preprocessing (paper, section II): 4 kHz, 5th-order Butterworth 50-2000 Hz.

    The filter runs at ``sample_rate`` (after resampling, as the paper orders it). A band top at
    or above that rate's Nyquist frequency (2000 Hz at 4 kHz, the default) cannot be a
    Butterworth edge; the filter is then a high-pass at ``band_low_hz`` and the resampler's
    anti-aliasing low-pass is the band's top (see ``tfbreath.icbhi.preprocess``).
    """

    sample_rate: int = 4000
    band_low_hz: float = 50.0
    band_high_hz: float = 2000.0
    filter_order: int = 5
    cycle_s: float = 7.0
    """Every cycle is padded (or cut) to this length; 7 s scored best in the paper's Table II."""

    def __post_init__(self) -> None:
        check_sample_rate(self.sample_rate)
        positive("band_low_hz", self.band_low_hz)
        nyquist = self.sample_rate / 2.0
        typed("band_high_hz", self.band_high_hz, float,
              f"in (band_low_hz = {self.band_low_hz!r}, Nyquist = {nyquist!r}]",
              lambda value: self.band_low_hz < value <= nyquist)
        integer("filter_order", self.filter_order, 1)
        positive("cycle_s", self.cycle_s)

    @property
    def num_samples(self) -> int:
        """Samples of one padded cycle."""
        return int(round(self.sample_rate * self.cycle_s))

    @property
    def highpass_only(self) -> bool:
        """Whether the band top is the Nyquist frequency, so only the low edge is filtered."""
        return self.band_high_hz >= self.sample_rate / 2.0


@dataclasses.dataclass(frozen=True)
class PaddingConfig:
    """Smart padding (paper, section II-A) of the training cycles, and optionally the test ones.

    ``smart = False`` pads every cycle by repeating it. Smart padding chooses neighbours by
    their annotated labels, so on the test set it would read ground truth; ``smart_test``
    (off by default) allows that, else test cycles are padded by repeating themselves.
    """

    smart: bool = True
    smart_test: bool = False
    long_cycles: str = "cut"
    window_hop_s: float = 3.5
    """With ``long_cycles = "windows"``: seconds between the starts of a long cycle's windows."""

    def __post_init__(self) -> None:
        boolean("smart", self.smart)
        boolean("smart_test", self.smart_test)
        choice("long_cycles", self.long_cycles, LONG_CYCLES)
        positive("window_hop_s", self.window_hop_s)


@dataclasses.dataclass(frozen=True)
class SpectrogramConfig:
    """Mel spectrogram and blank-region clipping, RespireNet's public-code values.

    ``blank_level`` and ``blank_row_fraction``: a pixel of the [0, 1]-scaled dB spectrogram is
    blank below ``blank_level`` (10 of 255 grey levels in the code), and a row is blank when at
    least ``blank_row_fraction`` of its pixels are; the blank rows at the top (highest bands)
    are clipped (see ``tfbreath.icbhi.spectrogram``).
    """

    n_fft: int = 256
    hop_length: int = 128
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 2000.0
    top_db: float = 80.0
    """Dynamic range kept below each spectrogram's peak (librosa.power_to_db's default)."""
    clip_blank: bool = True
    blank_level: float = 10.0 / 255.0
    blank_row_fraction: float = 0.8
    input: str = "grey"
    image_scale: int = 3
    """With ``input = "image"``: the rendered image is this many times the spectrogram's size."""

    def __post_init__(self) -> None:
        for name in ("n_fft", "hop_length", "n_mels"):
            integer(name, getattr(self, name), 1)
        require(self.hop_length <= self.n_fft, f"hop_length must be <= n_fft ({self.n_fft}), got {self.hop_length!r}")
        positive("fmax", self.fmax)
        in_range("fmin", self.fmin, 0, self.fmax, high_open=True)
        positive("top_db", self.top_db)
        boolean("clip_blank", self.clip_blank)
        in_range("blank_level", self.blank_level, 0, 1, low_open=True, high_open=True)
        in_range("blank_row_fraction", self.blank_row_fraction, 0, 1, low_open=True)
        choice("input", self.input, INPUTS)
        integer("image_scale", self.image_scale, 1)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (paper, section II-A); each technique has its own switch.

    Waveform augmentations are drawn per cycle, each with its own probability: concatenation
    with another cycle of the same class, additive white noise at a random SNR, a speed change
    (resampling, so pitch moves with it) and a circular time shift (RespireNet's ``rollAudio``).
    ``balanced_sampler`` draws every class equally often (the paper's weighted random sampler).
    """

    concat: bool = True
    concat_probability: float = 0.5
    noise_probability: float = 0.5
    noise_snr_db_min: float = 15.0
    noise_snr_db_max: float = 30.0
    speed_probability: float = 0.5
    speed_min: float = 0.9
    speed_max: float = 1.1
    shift_probability: float = 0.5
    vtlp_probability: float = 0.0
    """Vocal-tract-length perturbation: the spectrum's frequency axis warped by a factor drawn
    from U(``vtlp_alpha_min``, ``vtlp_alpha_max``), duration kept (pitch shift without speed change);
    piecewise linear with 0 and Nyquist fixed, applied after the speed change
    (``tfbreath.icbhi.augment.vtlp``). 0 leaves it out of the graph."""
    vtlp_alpha_min: float = 0.9
    vtlp_alpha_max: float = 1.1
    balanced_sampler: bool = True

    def __post_init__(self) -> None:
        boolean("concat", self.concat)
        boolean("balanced_sampler", self.balanced_sampler)
        for name in ("concat_probability", "noise_probability", "speed_probability", "shift_probability",
                     "vtlp_probability"):
            probability(name, getattr(self, name))
        typed("noise_snr_db_min", self.noise_snr_db_min, float, "(in dB)")
        _at_least("noise_snr_db_max", self.noise_snr_db_max, "noise_snr_db_min", self.noise_snr_db_min)
        positive("speed_min", self.speed_min)
        _at_least("speed_max", self.speed_max, "speed_min", self.speed_min)
        positive("vtlp_alpha_min", self.vtlp_alpha_min)
        _at_least("vtlp_alpha_max", self.vtlp_alpha_max, "vtlp_alpha_min", self.vtlp_alpha_min)


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Train/test division: the official 60/40 list, RespireNet's patient folds, or a seeded
    patient-wise 60/40 or 80/20.

    ``folds_file`` names RespireNet's patient folds (its ``patient_list_foldwise.txt``: one
    ``<patient> <fold>`` line per patient, folds 0-4); with ``scheme = "folds"`` the patients of
    fold ``test_fold`` are the test side, as in the authors' code.
    """

    scheme: str = "official"
    seed: int = 42
    folds_file: str = ""
    test_fold: int = RESPIRENET_TEST_FOLD

    def __post_init__(self) -> None:
        choice("scheme", self.scheme, SPLIT_SCHEMES)
        integer("seed", self.seed, 0)
        require(isinstance(self.folds_file, str), f"folds_file must be a file path string, got {self.folds_file!r}")
        require((self.scheme == FOLDS_SCHEME) == bool(self.folds_file),
                f"scheme {FOLDS_SCHEME!r} reads folds_file and only it does; got scheme {self.scheme!r} with "
                f"folds_file {self.folds_file!r}")
        integer("test_fold", self.test_fold, 0)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """ResNet backbone + two Dense(dense_units) layers with dropout + softmax (built by ``resnet``)."""

    backbone: str = "resnet34"
    width: float = 1.0
    """Filter multiplier of the backbone (1.0 = ResNet-34's 64..512 filters)."""
    dense_units: int = 128
    dropout: float = 0.5
    initial_weights: str = ""
    """A local ``.keras`` / ``.weights.h5`` file to start from ("" = random initialisation)."""
    imagenet_weights: str = ""
    """A torchvision ResNet-34 state dict (the ``.pth`` users download, e.g. ImageNet weights),
    converted into the backbone (``tfbreath.icbhi.torchvision_weights``); "" = none."""

    def __post_init__(self) -> None:
        choice("backbone", self.backbone, BACKBONES)
        positive("width", self.width)
        integer("dense_units", self.dense_units, 1)
        in_range("dropout", self.dropout, 0, 1, high_open=True)
        require(isinstance(self.initial_weights, str),
                f"initial_weights must be a file path string, got {self.initial_weights!r}")
        require(isinstance(self.imagenet_weights, str),
                f"imagenet_weights must be a file path string, got {self.imagenet_weights!r}")
        require(not (self.initial_weights and self.imagenet_weights),
                f"give initial_weights or imagenet_weights, not both; got {self.initial_weights!r} and "
                f"{self.imagenet_weights!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Two-stage training (paper, section III): SGD with momentum, then per-device fine-tuning."""

    classes: int = 4
    batch_size: int = 64
    momentum: float = 0.9
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    epochs: int = 200
    finetune_epochs: int = 50
    device_finetune: bool = True
    precision: str = "auto"
    weight_decay: float = 0.0
    """SGD weight decay (RespireNet's code: 5e-4)."""
    class_weights: tuple[float, ...] = ()
    """Loss weight per class, in class order (RespireNet's code: 0.1, 0.3, 0.3, 0.3 for four
    classes, the inverse of [3, 1, 1, 1] normalised); () = every class weighs 1."""
    select: str = "last"
    validation_fraction: float = 0.2
    """With ``select = "best"``: share of the training patients held out to pick the epoch."""

    def __post_init__(self) -> None:
        require(is_integer(self.classes) and self.classes in CLASS_COUNTS,
                f"classes must be one of {list(CLASS_COUNTS)}, got {self.classes!r}")
        integer("batch_size", self.batch_size, 1)
        in_range("momentum", self.momentum, 0, 1, high_open=True)
        positive("learning_rate", self.learning_rate)
        positive("finetune_learning_rate", self.finetune_learning_rate)
        integer("epochs", self.epochs, 1)
        integer("finetune_epochs", self.finetune_epochs, 0)
        boolean("device_finetune", self.device_finetune)
        choice("precision", self.precision, PRECISIONS)
        typed("weight_decay", self.weight_decay, float, ">= 0", lambda value: value >= 0)
        require(isinstance(self.class_weights, (list, tuple)) and all(
            is_number(w) and w > 0 for w in self.class_weights),
            f"class_weights must be a list of numbers > 0, got {self.class_weights!r}")
        require(len(self.class_weights) in (0, self.classes),
                f"class_weights must have one entry per class ({self.classes}), got {list(self.class_weights)!r}")
        object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
        choice("select", self.select, SELECTIONS)
        in_range("validation_fraction", self.validation_fraction, 0, 1, low_open=True, high_open=True)


_SECTIONS = {"audio": AudioConfig, "padding": PaddingConfig, "spectrogram": SpectrogramConfig,
             "augment": AugmentConfig, "split": SplitConfig, "model": ModelConfig, "train": TrainConfig}


@dataclasses.dataclass(frozen=True)
class IcbhiConfig:
    """One ICBHI pipeline: audio -> padding -> spectrogram -> augmentation -> split -> model -> training."""

    name: str = "icbhi_respirenet"
    task: str = TASK
    audio: AudioConfig = AudioConfig()
    padding: PaddingConfig = PaddingConfig()
    spectrogram: SpectrogramConfig = SpectrogramConfig()
    augment: AugmentConfig = AugmentConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        require(self.task == TASK, f"task must be {TASK!r}, got {self.task!r}")
        nyquist = self.audio.sample_rate / 2.0
        require(self.spectrogram.fmax <= nyquist,
                f"[spectrogram] fmax must be <= the Nyquist frequency of [audio] sample_rate ({nyquist!r}), "
                f"got {self.spectrogram.fmax!r}")
        require(self.spectrogram.n_fft <= self.audio.num_samples,
                f"[spectrogram] n_fft must be <= the samples of one cycle ({self.audio.num_samples}), "
                f"got {self.spectrogram.n_fft!r}")


def icbhi_config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> IcbhiConfig:
    """Build a validated ``IcbhiConfig`` from a nested dict (as parsed from TOML)."""
    unknown = sorted(set(raw) - set(_SECTIONS) - {"name", "task"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; known: {['name', 'task', *_SECTIONS]}")
    sections = {key: build_section(cls, key, raw.get(key, {}), source) for key, cls in _SECTIONS.items()}
    try:
        return IcbhiConfig(name=str(raw.get("name", IcbhiConfig.name)), task=raw.get("task", TASK), **sections)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def parse_icbhi_config(text: str, source: str = "<string>") -> IcbhiConfig:
    """Parse and validate ICBHI pipeline TOML text (what ``dump_icbhi_config`` writes)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML ({err})") from None
    return icbhi_config_from_dict(raw, source=source)


def load_icbhi_config(path: str | Path) -> IcbhiConfig:
    """Parse and validate an ICBHI pipeline TOML file."""
    return parse_icbhi_config(read_pipeline_text(path), source=str(path))


def dump_icbhi_config(config: IcbhiConfig) -> str:
    """The whole resolved pipeline as TOML that ``parse_icbhi_config`` reads back to an equal config."""
    return dump_sections({"name": config.name, "task": config.task},
                         {section: getattr(config, section) for section in _SECTIONS})


def is_icbhi_pipeline(path: str | Path) -> bool:
    """Whether a pipeline file says ``task = "icbhi"`` at the top level.

    A missing or unparsable file is not one (False), so the caller's normal loader reports it.
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return raw.get("task") == TASK
