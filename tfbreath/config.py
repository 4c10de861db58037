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


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(name: str, value: Any) -> None:
    _require(value > 0, f"{name} must be > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """How every file is decoded: resampled to ``sample_rate`` and padded/trimmed to ``duration_s``."""

    sample_rate: int = 16000
    duration_s: float = 1.0

    def __post_init__(self) -> None:
        _require(
            MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE,
            f"sample_rate must be in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}], got {self.sample_rate!r}",
        )
        _positive("duration_s", self.duration_s)

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
            _positive(name, getattr(self, name))
        _require(self.n_fft & (self.n_fft - 1) == 0, f"n_fft must be a power of two, got {self.n_fft!r}")
        _require(self.hop_length <= self.n_fft,
                 f"hop_length must be <= n_fft ({self.n_fft}), got {self.hop_length!r}")
        _require(self.n_mfcc <= self.n_mels, f"n_mfcc must be <= n_mels ({self.n_mels}), got {self.n_mfcc!r}")
        object.__setattr__(self, "maps", tuple(self.maps))
        unknown = [m for m in self.maps if m not in MAP_NAMES]
        _require(not unknown, f"maps has unknown names {unknown!r}; choose from {list(MAP_NAMES)}")
        _require(len(set(self.maps)) == len(self.maps), f"maps has duplicates, got {list(self.maps)!r}")
        _require(bool(self.maps), "maps must name at least one spectral map, got []")

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
        _require(0.0 < self.validation_fraction < 1.0,
                 f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        _positive("batch_size", self.batch_size)
        _positive("shuffle_buffer", self.shuffle_buffer)
        _require(bool(self.cache), f"cache must be 'memory', 'none' or a file path, got {self.cache!r}")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """One task's whole pipeline: audio → features → data."""

    name: str = "breath_phase"
    audio: AudioConfig = AudioConfig()
    features: FeatureConfig = FeatureConfig()
    data: DataConfig = DataConfig()

    @property
    def num_frames(self) -> int:
        """Time frames of every spectral map (centred STFT frames of one clip)."""
        return 1 + self.audio.num_samples // self.features.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"audio": AudioConfig, "features": FeatureConfig, "data": DataConfig}


def _build_section(cls: type, section: str, values: Any, source: str) -> Any:
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
    sections = {key: _build_section(cls, key, raw.get(key, {}), source) for key, cls in _SECTIONS.items()}
    return PipelineConfig(name=str(raw.get("name", PipelineConfig.name)), **sections)


def load_config(path: str | Path) -> PipelineConfig:
    """Parse and validate a pipeline TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    return config_from_dict(raw, source=str(path))
