"""Pipeline configuration: frozen dataclasses parsed from ``pipelines/*.toml``.

Every field has the breathing-phase paper's value as its default, so ``PipelineConfig()`` is
the embedded default pipeline. A TOML file overrides any subset, section by section:

    [audio]
    sample_rate = 16000
    [features]
    maps = ["mel", "mfcc"]

Validation errors echo the bad value: ``n_mels must be > 0, got 0``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

MAP_NAMES = (
    "mel",
    "mel_delta",
    "mel_delta2",
    "mfcc",
    "chroma",
    "gammatone",
    "modulation",
    "tempogram",
    "lpc",
)
"""The nine spectral maps of the breathing-phase paper, in channel order."""

N_SCALARS = 39
"""Length of the scalar feature vector (see ``tfbreath.scalars``)."""

MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 48000


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and echoes the value."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def positive(name: str, value: Any) -> None:
    require(value > 0, f"{name} must be > 0, got {value!r}")


def integer(name: str, value: Any, minimum: int) -> None:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
            f"{name} must be an integer >= {minimum}, got {value!r}")


def probability(name: str, value: Any) -> None:
    require(0.0 <= value <= 1.0, f"{name} must be in [0, 1], got {value!r}")


def check_sample_rate(value: Any) -> None:
    """Rates the decoder resamples to (``tfbreath.audio``)."""
    require(MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE,
            f"sample_rate must be in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}], got {value!r}")


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """How every file is decoded: resampled to ``sample_rate`` and padded/trimmed to ``duration_s``."""

    sample_rate: int = 16000
    duration_s: float = 1.0

    def __post_init__(self) -> None:
        check_sample_rate(self.sample_rate)
        positive("duration_s", self.duration_s)

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.duration_s))


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Spectral maps and scalars computed in-graph (see ``tfbreath.features``)."""

    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 128
    fmax: float = 4500.0
    n_mfcc: int = 40
    n_gammatone: int = 64
    lpc_order: int = 12
    lpc_frame_s: float = 0.025
    maps: tuple[str, ...] = MAP_NAMES
    scalars: bool = True

    def __post_init__(self) -> None:
        for name in ("n_fft", "hop_length", "n_mels", "fmax", "n_mfcc", "n_gammatone",
                     "lpc_order", "lpc_frame_s"):
            positive(name, getattr(self, name))
        require(self.n_fft & (self.n_fft - 1) == 0, f"n_fft must be a power of two, got {self.n_fft!r}")
        require(self.hop_length <= self.n_fft,
                 f"hop_length must be <= n_fft ({self.n_fft}), got {self.hop_length!r}")
        require(self.n_mfcc <= self.n_mels, f"n_mfcc must be <= n_mels ({self.n_mels}), got {self.n_mfcc!r}")
        object.__setattr__(self, "maps", tuple(self.maps))
        unknown = [m for m in self.maps if m not in MAP_NAMES]
        require(not unknown, f"maps has unknown names {unknown!r}; choose from {list(MAP_NAMES)}")
        require(len(set(self.maps)) == len(self.maps), f"maps has duplicates, got {list(self.maps)!r}")
        require(bool(self.maps), "maps must name at least one spectral map, got []")

    @property
    def n_scalars(self) -> int:
        return N_SCALARS if self.scalars else 0


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How a labelled folder becomes train/validation tf.data pipelines."""

    validation_fraction: float = 0.2
    seed: int = 42
    batch_size: int = 64
    cache: str = "memory"
    """``"memory"``, ``"none"``, or a file path prefix for ``Dataset.cache``."""
    shuffle_buffer: int = 4096

    def __post_init__(self) -> None:
        require(0.0 < self.validation_fraction < 1.0,
                 f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        positive("batch_size", self.batch_size)
        positive("shuffle_buffer", self.shuffle_buffer)
        require(bool(self.cache), f"cache must be 'memory', 'none' or a file path, got {self.cache!r}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation parameters; the defaults are the breathing-phase paper's recipe."""

    p_cutmix: float = 0.6
    cutmix_alpha: float = 1.0
    p_mixup: float = 0.4
    mixup_alpha: float = 0.2
    warmup_epochs: int = 4

    def __post_init__(self) -> None:
        for name in ("p_cutmix", "p_mixup"):
            probability(name, getattr(self, name))
        total = self.p_cutmix + self.p_mixup
        require(total <= 1.0 + 1e-9,
                 f"p_cutmix + p_mixup must be <= 1, "
                 f"got {self.p_cutmix!r} + {self.p_mixup!r} = {total!r}")
        for name in ("cutmix_alpha", "mixup_alpha"):
            value = getattr(self, name)
            require(value > 0, f"{name} must be > 0, got {value!r}")
        integer("warmup_epochs", self.warmup_epochs, 0)


MODEL_NAMES = ("cnn8", "vgg")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def _default_learning_rates() -> dict[str, float]:
    return {"cnn8": 4e-4, "vgg": 1e-3}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training recipe: which models, optimiser, schedule, stopping and precision."""

    models: tuple[str, ...] = MODEL_NAMES
    epochs: int = 140
    learning_rates: dict[str, float] = dataclasses.field(default_factory=_default_learning_rates)
    """Peak learning rate per model (after warm-up)."""
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    """Share of all steps spent warming the learning rate up linearly."""
    warmup_start_factor: float = 0.1
    """The warm-up starts at this fraction of the peak learning rate."""
    min_learning_rate: float = 1e-6
    """Where the cosine decay ends."""
    clipnorm: float = 1.0
    early_stopping_patience: int = 20
    precision: str = "auto"
    model_width: float = 1.0
    """Filter multiplier of the conv stacks (1.0 = the paper's models)."""
    dropouts: dict[str, float] = dataclasses.field(default_factory=dict)
    """Dropout rate per model; a model left out keeps its own (CNN8 0.3, VGG 0.2)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        require(not unknown, f"models has unknown names {unknown!r}; choose from {list(MODEL_NAMES)}")
        require(bool(self.models), "models must name at least one model, got []")
        require(len(set(self.models)) == len(self.models), f"models has duplicates, got {list(self.models)!r}")
        for name in ("epochs", "weight_decay", "min_learning_rate", "clipnorm", "early_stopping_patience",
                     "model_width", "warmup_start_factor"):
            positive(name, getattr(self, name))
        require(0.0 <= self.warmup_fraction < 1.0,
                 f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        require(self.precision in PRECISIONS, f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        missing = [m for m in self.models if m not in self.learning_rates]
        require(not missing, f"learning_rates has no entry for {missing!r}, got {dict(self.learning_rates)!r}")
        for model, rate in self.learning_rates.items():
            positive(f"learning_rates.{model}", rate)
        unknown = [m for m in self.dropouts if m not in MODEL_NAMES]
        require(not unknown, f"dropouts has unknown models {unknown!r}; choose from {list(MODEL_NAMES)}")
        for model, rate in self.dropouts.items():
            require(0.0 <= rate < 1.0, f"dropouts.{model} must be in [0, 1), got {rate!r}")


TUNERS = ("hyperband", "bayesian", "random")
"""KerasTuner search algorithms offered by ``python -m tfbreath.tune``."""

MIN_HYPERBAND_FACTOR = 2
"""Hyperband keeps 1/factor of the models per round; a factor below 2 would never halve."""

SET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
"""Map-set names become bare TOML keys and KerasTuner choice values."""


def _default_map_sets() -> dict[str, tuple[str, ...]]:
    return {"all": MAP_NAMES,
            "spectral": ("mel", "mel_delta", "mel_delta2", "mfcc", "gammatone", "modulation"),
            "mel": ("mel", "mel_delta", "mel_delta2")}


def _choices(name: str, values: Any, check) -> tuple:
    """A non-empty, duplicate-free tuple of choices, each passing ``check``."""
    require(isinstance(values, (list, tuple)) and bool(values),
            f"{name} must be a non-empty list of choices, got {values!r}")
    require(len(set(values)) == len(values), f"{name} has duplicates, got {list(values)!r}")
    for value in values:
        check(value)
    return tuple(values)


def _span(name: str, values: Any, low: float, high: float | None = None, *, integer: bool = False,
          open_high: bool = False) -> tuple:
    """A ``[low, high]`` search range with ``low <= high``, inside the allowed bounds."""
    kind = int if integer else (int, float)
    require(isinstance(values, (list, tuple)) and len(values) == 2
            and all(isinstance(v, kind) and not isinstance(v, bool) for v in values),
            f"{name} must be a [low, high] pair of {'integers' if integer else 'numbers'}, got {values!r}")
    bounds = f"[{low}, " + ("inf)" if high is None else f"{high})" if open_high else f"{high}]")
    inside = all(v >= low and (high is None or (v < high if open_high else v <= high)) for v in values)
    require(inside, f"{name} must lie in {bounds}, got {list(values)!r}")
    require(values[0] <= values[1], f"{name} must be [low, high] with low <= high, got {list(values)!r}")
    return tuple(values)


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """The hyperparameter search of ``python -m tfbreath.tune``: its space and its budget.

    Lists are choices, ``[low, high]`` pairs are ranges (``low == high`` fixes the value);
    ``learning_rate`` and ``weight_decay`` are sampled log-uniformly. ``map_sets`` names the
    groups of spectral maps a trial may feed; the features of all of them are extracted once.
    """

    model: str = "cnn8"
    tuner: str = "hyperband"
    max_trials: int = 30
    """Cap on the number of trials, for every tuner (Hyperband may stop before its last bracket)."""
    max_epochs: int = 20
    """Epochs of the longest trial (Hyperband) or of every trial (Bayesian, random)."""
    hyperband_factor: int = 3
    model_widths: tuple[float, ...] = (0.125, 0.25, 0.5)
    dropout: tuple[float, float] = (0.1, 0.5)
    map_sets: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=_default_map_sets)
    learning_rate: tuple[float, float] = (1e-4, 3e-3)
    weight_decay: tuple[float, float] = (1e-5, 1e-3)
    p_cutmix: tuple[float, float] = (0.0, 0.6)
    p_mixup: tuple[float, float] = (0.0, 0.4)
    warmup_epochs: tuple[int, int] = (0, 4)
    """Epochs before CutMix/MixUp start (``[augment] warmup_epochs``)."""
    batch_sizes: tuple[int, ...] = (32, 64)

    def __post_init__(self) -> None:
        require(self.model in MODEL_NAMES, f"model must be one of {list(MODEL_NAMES)}, got {self.model!r}")
        require(self.tuner in TUNERS, f"tuner must be one of {list(TUNERS)}, got {self.tuner!r}")
        for name in ("max_trials", "max_epochs"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                    f"{name} must be an integer > 0, got {value!r}")
        integer("hyperband_factor", self.hyperband_factor, MIN_HYPERBAND_FACTOR)
        fields = {
            "model_widths": tuple(float(w) for w in _choices("model_widths", self.model_widths,
                                                             lambda w: positive("model_widths entries", w))),
            "batch_sizes": _choices("batch_sizes", self.batch_sizes, lambda b: require(
                isinstance(b, int) and not isinstance(b, bool) and b > 0,
                f"batch_sizes entries must be integers > 0, got {b!r}")),
            "dropout": _span("dropout", self.dropout, 0.0, 1.0, open_high=True),
            "learning_rate": _span("learning_rate", self.learning_rate, 0.0),
            "weight_decay": _span("weight_decay", self.weight_decay, 0.0),
            "p_cutmix": _span("p_cutmix", self.p_cutmix, 0.0, 1.0),
            "p_mixup": _span("p_mixup", self.p_mixup, 0.0, 1.0),
            "warmup_epochs": _span("warmup_epochs", self.warmup_epochs, 0, integer=True),
        }
        for name in ("learning_rate", "weight_decay"):  # sampled log-uniformly
            positive(f"{name} low", fields[name][0])
        top = fields["p_cutmix"][1] + fields["p_mixup"][1]
        require(top <= 1.0 + 1e-9, f"p_cutmix high + p_mixup high must be <= 1 (every trial a valid "
                                   f"[augment]), got {fields['p_cutmix'][1]!r} + {fields['p_mixup'][1]!r}")
        require(isinstance(self.map_sets, dict) and bool(self.map_sets),
                f"map_sets must be a non-empty table of name = [maps], got {self.map_sets!r}")
        sets = {}
        for name, maps in self.map_sets.items():
            require(bool(SET_NAME.match(name)), f"map_sets name must be letters, digits, _ or -, got {name!r}")
            require(isinstance(maps, (list, tuple)), f"map_sets.{name} must be a list of maps, got {maps!r}")
            try:
                sets[name] = FeatureConfig(maps=maps).maps
            except ConfigError as err:
                raise ConfigError(f"map_sets.{name}: {err}") from None
        fields["map_sets"] = sets
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def searched_maps(self) -> tuple[str, ...]:
        """Every map some set feeds, in channel order: what is extracted once for all trials."""
        wanted = {m for maps in self.map_sets.values() for m in maps}
        return tuple(m for m in MAP_NAMES if m in wanted)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """One task's whole pipeline: audio → features → data → training and augmentation."""

    name: str = "breath_phase"
    audio: AudioConfig = AudioConfig()
    features: FeatureConfig = FeatureConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    tune: TuneConfig = TuneConfig()

    @property
    def num_frames(self) -> int:
        """Time frames of every spectral map (centred STFT frames of one clip)."""
        return 1 + self.audio.num_samples // self.features.hop_length


_SECTIONS = {"audio": AudioConfig, "features": FeatureConfig, "data": DataConfig, "train": TrainConfig,
             "augment": AugmentConfig, "tune": TuneConfig}


def build_section(cls: type, section: str, values: Any, source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{section}] must be a table, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in [{section}]; known: {sorted(known)}")
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{source}: [{section}] {err}") from None


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Build a validated ``PipelineConfig`` from a nested dict (as parsed from TOML)."""
    unknown = sorted(set(raw) - set(_SECTIONS) - {"name"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; known: {['name', *_SECTIONS]}")
    sections = {key: build_section(cls, key, raw.get(key, {}), source) for key, cls in _SECTIONS.items()}
    return PipelineConfig(name=str(raw.get("name", PipelineConfig.name)), **sections)


def load_config(path: str | Path) -> PipelineConfig:
    """Parse and validate a pipeline TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    return parse_config(path.read_text(encoding="utf-8"), source=str(path))


def parse_config(text: str, source: str = "<string>") -> PipelineConfig:
    """Parse and validate pipeline TOML text (what ``dump_config`` writes)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML ({err})") from None
    return config_from_dict(raw, source=source)


def with_overrides(pipeline: PipelineConfig, section: str, **values: Any) -> PipelineConfig:
    """A copy with some fields of one section replaced (``None`` values are ignored), validated."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return pipeline
    try:
        updated = dataclasses.replace(getattr(pipeline, section), **values)
    except ConfigError as err:
        raise ConfigError(f"[{section}] {err}") from None
    return dataclasses.replace(pipeline, **{section: updated})


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} to TOML")


def dump_sections(top: dict[str, Any], sections: dict[str, Any]) -> str:
    """TOML of top-level keys, then one ``[section]`` table per frozen dataclass instance."""
    lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for section, values in sections.items():
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in dataclasses.asdict(values).items()]
    return "\n".join(lines) + "\n"


def dump_config(pipeline: PipelineConfig) -> str:
    """The whole resolved pipeline as TOML that ``load_config`` reads back to an equal config."""
    return dump_sections({"name": pipeline.name}, {section: getattr(pipeline, section) for section in _SECTIONS})
