"""Pipeline configuration: frozen dataclasses parsed from ``pipelines/*.toml``.

Every field has the breathing-phase paper's value as its default, so ``PipelineConfig()`` is
the embedded default pipeline. A TOML file overrides any subset, section by section:

    [audio]
    sample_rate = 16000
    [features]
    maps = ["mel", "mfcc"]

Every field is checked for its type and its range, and errors echo the bad value on one line:
``n_mels must be an integer > 0, got '128'``, ``n_mels must be > 0, got 0``. ``PipelineConfig``
also checks what the in-graph features need across sections (``check_feature_geometry``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

from tfbreath.errors import TfbreathError

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

SCALAR_NAMES: tuple[str, ...] = (
    "rms_mean", "rms_std", "rms_max", "rms_min",
    "zcr_mean", "zcr_std", "zcr_max", "zcr_min",
    "centroid_mean", "centroid_std", "centroid_skew",
    "bandwidth_mean", "bandwidth_std",
    "rolloff_mean", "rolloff_std",
    "flatness_mean", "flatness_std",
    "contrast_mean", "contrast_std",
    "envelope_mean", "envelope_std", "envelope_mean_std_ratio",
    "envelope_peak_count", "envelope_peak_height_mean", "envelope_peak_height_std",
    "low_freq_energy_ratio",
    "mel_flux_mean", "mel_flux_std", "mel_flux_max",
    "waveform_skew", "waveform_kurtosis", "abs_amplitude_p90", "abs_amplitude_p10",
    "autocorr_10ms", "autocorr_20ms", "autocorr_min_lag_s",
    "bandwidth_skew", "rolloff_skew", "flatness_skew",
)
"""The 39 scalar features, in vector order (computed by ``tfbreath.scalars``)."""
N_SCALARS = len(SCALAR_NAMES)

SPECTRAL = "spectral"
"""Key of the stacked maps in a feature dict, and name of every model's map input."""
SCALARS = "scalars"
"""Key of the scalar vector in a feature dict, and name of every model's scalar input."""

NO_BAND_LIMIT = 0.0
"""``[features] band_limit_hz`` that keeps the waveform's full band."""

NO_LEVEL = 0.0
"""``[features] level_rms`` that keeps each clip at its recorded level."""

MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 48000

MAX_SEED = 2**32 - 1
"""Largest seed scikit-learn's splitters take (``random_state`` is a 32-bit NumPy seed)."""


class ConfigError(TfbreathError, ValueError):
    """A configuration value is invalid; the message names the field and echoes the value."""


KIND_WORDS = {int: "an integer", float: "a number"}
"""How a message names the type a numeric field needs: ints are not bools, numbers are finite."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def is_integer(value: Any) -> bool:
    """An int proper: TOML's ``true`` is a bool and ``10.5`` a float, neither counts."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (TOML's ``nan`` and ``inf`` are floats, and no field takes them)."""
    return (is_integer(value) or isinstance(value, float)) and math.isfinite(value)


def typed(name: str, value: Any, kind: type, bounds: str, inside: Callable[[Any], bool] | None = None) -> None:
    """``value`` is of ``kind`` (``int`` or ``float``, which takes ints too) and, if given,
    ``inside(value)``; else ``"<name> must be an integer <bounds>, got <value>"``."""
    of_kind = is_integer(value) if kind is int else is_number(value)
    require(of_kind and (inside is None or inside(value)),
            f"{name} must be {KIND_WORDS[kind]} {bounds}, got {value!r}")


def interval(low: Any, high: Any = None, *, low_open: bool = False, high_open: bool = False) -> str:
    """``[low, high]`` with round or square brackets; ``high=None`` is ``inf)``."""
    right = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
    return f"{'(' if low_open else '['}{low}, {right}"


def positive(name: str, value: Any, kind: type = float) -> None:
    typed(name, value, kind, "> 0")
    require(value > 0, f"{name} must be > 0, got {value!r}")


def integer(name: str, value: Any, minimum: int) -> None:
    typed(name, value, int, f">= {minimum}", lambda v: v >= minimum)


def in_range(name: str, value: Any, low: Any, high: Any, *, kind: type = float, low_open: bool = False,
             high_open: bool = False) -> None:
    """``low <= value <= high`` (or strictly, at an open end), and of ``kind``."""
    bounds = interval(low, high, low_open=low_open, high_open=high_open)
    typed(name, value, kind, f"in {bounds}")
    inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    require(inside, f"{name} must be in {bounds}, got {value!r}")


def probability(name: str, value: Any) -> None:
    in_range(name, value, 0, 1)


def boolean(name: str, value: Any) -> None:
    require(isinstance(value, bool), f"{name} must be true or false, got {value!r}")


def choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    """One of a few names (a string: a list or table never matches)."""
    require(isinstance(value, str) and value in options, f"{name} must be one of {list(options)}, got {value!r}")


def names(name: str, values: Any, options: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A non-empty, duplicate-free list of ``what`` names from ``options``, as a tuple."""
    require(isinstance(values, (list, tuple)) and all(isinstance(v, str) for v in values),
            f"{name} must be a list of {what} names, got {values!r}")
    unknown = [v for v in values if v not in options]
    require(not unknown, f"{name} has unknown names {unknown!r}; choose from {list(options)}")
    require(len(set(values)) == len(values), f"{name} has duplicates, got {list(values)!r}")
    require(bool(values), f"{name} must name at least one {what}, got []")
    return tuple(values)


def model_table(name: str, values: Any, check: Callable[[str, Any], None]) -> None:
    """A table of ``model = number``, each number passing ``check(f"{name}.{model}", number)``."""
    require(isinstance(values, dict), f"{name} must be a table of model = number, got {values!r}")
    for model, value in values.items():
        check(f"{name}.{model}", value)


def check_sample_rate(value: Any) -> None:
    """Rates the decoder resamples to (``tfbreath.audio``)."""
    in_range("sample_rate", value, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, kind=int)


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """How every file is decoded: resampled to ``sample_rate``, then trimmed to ``duration_s`` or, if
    shorter, repeated end to end to fill it (``tfbreath.audio.decode_wav``)."""

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
    band_limit_hz: float = NO_BAND_LIMIT
    """Low-pass every waveform so nothing at or above this frequency reaches the maps and scalars
    (``filters.lowpass_taps``); ``NO_BAND_LIMIT`` (0) keeps the full band. Set it to the
    recordings' real bandwidth: then a copy resampled to any rate that holds that band gives the
    same features."""
    level_rms: float = NO_LEVEL
    """Scale every clip (after the band limit) to this RMS before the maps and scalars, so the
    recording level reaches no feature; ``NO_LEVEL`` (0) keeps the level."""
    n_mfcc: int = 40
    n_gammatone: int = 64
    lpc_order: int = 12
    lpc_frame_s: float = 0.025
    maps: tuple[str, ...] = MAP_NAMES
    scalars: bool = True

    def __post_init__(self) -> None:
        for name in ("n_fft", "hop_length", "n_mels", "n_mfcc", "n_gammatone", "lpc_order"):
            positive(name, getattr(self, name), int)
        for name in ("fmax", "lpc_frame_s"):
            positive(name, getattr(self, name))
        typed("band_limit_hz", self.band_limit_hz, float, f"{NO_BAND_LIMIT!r} (off) or > 0",
              lambda v: v >= NO_BAND_LIMIT)
        typed("level_rms", self.level_rms, float, f"{NO_LEVEL!r} (off) or in (0, 1]",
              lambda v: v == NO_LEVEL or 0 < v <= 1)
        require(self.n_fft & (self.n_fft - 1) == 0, f"n_fft must be a power of two, got {self.n_fft!r}")
        require(self.hop_length <= self.n_fft,
                 f"hop_length must be <= n_fft ({self.n_fft}), got {self.hop_length!r}")
        require(self.n_mfcc <= self.n_mels, f"n_mfcc must be <= n_mels ({self.n_mels}), got {self.n_mfcc!r}")
        object.__setattr__(self, "maps", names("maps", self.maps, MAP_NAMES, "map"))
        boolean("scalars", self.scalars)

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
        in_range("validation_fraction", self.validation_fraction, 0, 1, low_open=True, high_open=True)
        in_range("seed", self.seed, 0, MAX_SEED, kind=int)
        positive("batch_size", self.batch_size, int)
        positive("shuffle_buffer", self.shuffle_buffer, int)
        require(isinstance(self.cache, str) and bool(self.cache),
                f"cache must be 'memory', 'none' or a file path, got {self.cache!r}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation parameters; the defaults are the breathing-phase paper's recipe."""

    p_cutmix: float = 0.6
    """Probability that a batch gets CutMix; ``p_mixup`` is MixUp's, and the other batches stay
    unmixed. The breath CPU recipe uses 0.3 / 0.3: with both at 0 its CNN8 lost 2.5 points out
    of fold (RESULTS.md)."""
    cutmix_alpha: float = 1.0
    p_mixup: float = 0.4
    mixup_alpha: float = 0.2
    warmup_epochs: int = 4
    freq_masks: int = 0
    """SpecAugment-style masks per clip across the band axis (0 = off); each zeroes (the z-scored
    maps' mean) a run of 0 to ``freq_mask_width`` bands of every map. Off in the pipelines: 2 band
    masks and 1 frame mask cost the breath recipe's CNN8 2.6 points out of fold (RESULTS.md)."""
    freq_mask_width: int = 16
    time_masks: int = 0
    """The same across frames: each zeroes a run of 0 to ``time_mask_width`` frames (0 = off)."""
    time_mask_width: int = 8

    def __post_init__(self) -> None:
        for name in ("p_cutmix", "p_mixup"):
            probability(name, getattr(self, name))
        total = self.p_cutmix + self.p_mixup
        require(total <= 1.0 + 1e-9,
                 f"p_cutmix + p_mixup must be <= 1, "
                 f"got {self.p_cutmix!r} + {self.p_mixup!r} = {total!r}")
        for name in ("cutmix_alpha", "mixup_alpha"):
            positive(name, getattr(self, name))
        for name in ("warmup_epochs", "freq_masks", "time_masks"):
            integer(name, getattr(self, name), 0)
        for name in ("freq_mask_width", "time_mask_width"):
            integer(name, getattr(self, name), 1)


PAPER_MODELS = ("cnn8", "vgg")
"""The breathing-phase paper's two CNNs: the default ensemble."""
TEMPORAL_MODEL = "temporal"
"""1-D convolutions along time over each frame's whole spectrum (``tfbreath.models.temporal``)."""
CNN_MODELS = (*PAPER_MODELS, TEMPORAL_MODEL)
"""Members trained by gradient steps (a learning rate each; ``tune`` searches them)."""
POOLED_MODEL = "pooled"
"""Logistic regression on pooled map statistics (``tfbreath.models.pooled``)."""
RBF_MODEL = "rbf"
"""Logistic regression on RBF similarities of the same statistics to landmark clips (``tfbreath.models.rbf``)."""
CLOSED_FORM_MODELS = (POOLED_MODEL, RBF_MODEL)
"""Members fitted in closed form (scikit-learn), with a ``C`` each instead of epochs."""
MODEL_NAMES = (*CNN_MODELS, *CLOSED_FORM_MODELS)
ENSEMBLE = "ensemble"
"""The members combined into one model (``tfbreath.ensemble``): its file stem and results key."""
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
CLIP_SCOPES = ("variable", "global")
NO_PSEUDO_LABELS = "none"
PSEUDO_LABELS = (NO_PSEUDO_LABELS, "soft")


def _default_learning_rates() -> dict[str, float]:
    return {"cnn8": 4e-4, "vgg": 1e-3}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training recipe: which models, optimiser, schedule, stopping and precision."""

    models: tuple[str, ...] = PAPER_MODELS
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
    clip_scope: str = "variable"
    """``"variable"``: each gradient tensor's norm is clipped to ``clipnorm`` (Keras' ``clipnorm``);
    ``"global"``: the norm of all gradients together, as the breathing-phase paper's authors clip
    (Keras' ``global_clipnorm``)."""
    ema_momentum: float = 0.0
    """0: the model keeps its last (or best) weights. In (0, 1): Polyak averaging, the optimiser
    keeps an exponential moving average of the weights with this momentum (Keras' ``use_ema``),
    validation scores the averages and the saved model carries them."""
    early_stopping_patience: int = 20
    precision: str = "auto"
    model_width: float = 1.0
    """Filter multiplier of the conv stacks (1.0 = the paper's models)."""
    dropouts: dict[str, float] = dataclasses.field(default_factory=dict)
    """Dropout rate per model; a model left out keeps its own (CNN8 and temporal 0.3, VGG 0.2)."""
    patiences: dict[str, int] = dataclasses.field(default_factory=dict)
    """Early-stopping patience per gradient model; a model left out uses ``early_stopping_patience``.
    The temporal CNN's validation accuracy settles only as the learning rate decays: give it
    ``epochs``, so it trains them all and keeps its best."""
    member_maps: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """The maps a gradient member reads, out of ``[features] maps`` (its first layer,
    ``models.select_maps.SelectMaps``, keeps their channels); a model left out reads all of them.
    The closed-form members always read all of them."""
    pooled_c: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    """Inverse L2 strengths the ``pooled`` member tries; the lowest log-loss on the early-stopping
    split wins (a refit uses the folds' median choice)."""
    rbf_c: tuple[float, ...] = (1.0, 10.0, 100.0)
    """Inverse L2 strengths the ``rbf`` member tries, chosen as ``pooled_c`` is."""
    rbf_landmarks: int = 1024
    """Training clips the ``rbf`` member compares every clip with (all of them if fewer)."""
    folds: int = 1
    """1: one session-grouped validation split stops the models early, weights the ensemble and
    scores it (an optimistic score). K >= 2: session-grouped K-fold cross-validation gives an
    out-of-fold estimate with a session-bootstrap interval, then every model is refit on all
    clips for the epoch count the folds chose (``tfbreath.crossval``)."""
    pseudo_labels: str = NO_PSEUDO_LABELS
    """``"soft"`` (needs ``folds >= 2``): the gradient members train a second time, on the
    labelled clips plus the data folder's unlabelled ones (``test.csv``), each targeted at the
    P(exhale) its fold's ensemble gives it (``tfbreath.pseudo_labels``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", names("models", self.models, MODEL_NAMES, "model"))
        for name in ("epochs", "early_stopping_patience", "folds", "rbf_landmarks"):
            positive(name, getattr(self, name), int)
        for name in ("weight_decay", "min_learning_rate", "clipnorm", "model_width", "warmup_start_factor"):
            positive(name, getattr(self, name))
        in_range("warmup_fraction", self.warmup_fraction, 0, 1, high_open=True)
        in_range("ema_momentum", self.ema_momentum, 0, 1, high_open=True)
        choice("precision", self.precision, PRECISIONS)
        choice("clip_scope", self.clip_scope, CLIP_SCOPES)
        choice("pseudo_labels", self.pseudo_labels, PSEUDO_LABELS)
        require(self.pseudo_labels == NO_PSEUDO_LABELS or self.folds >= 2,
                f"pseudo_labels = {self.pseudo_labels!r} needs folds >= 2 (the folds' ensembles are the "
                f"teachers), got folds = {self.folds}")
        require(self.pseudo_labels == NO_PSEUDO_LABELS or any(m in CNN_MODELS for m in self.models),
                f"pseudo_labels = {self.pseudo_labels!r} needs a gradient member ({list(CNN_MODELS)}) to train "
                f"on them, got models = {list(self.models)}")
        model_table("learning_rates", self.learning_rates, positive)
        for name in ("pooled_c", "rbf_c"):
            values = getattr(self, name)
            require(isinstance(values, (list, tuple)) and len(values) > 0,
                    f"{name} must be a non-empty list of numbers > 0, got {values!r}")
            for value in values:
                positive(name, value)
            object.__setattr__(self, name, tuple(float(v) for v in values))
        missing = [m for m in self.models if m in CNN_MODELS and m not in self.learning_rates]
        require(not missing, f"learning_rates has no entry for {missing!r}, got {dict(self.learning_rates)!r}")
        model_table("dropouts", self.dropouts, lambda name, rate: in_range(name, rate, 0, 1, high_open=True))
        model_table("patiences", self.patiences, lambda name, patience: positive(name, patience, int))
        require(isinstance(self.member_maps, dict),
                f"member_maps must be a table of model = [maps], got {self.member_maps!r}")
        for name in ("learning_rates", "dropouts", "patiences", "member_maps"):
            unknown = [m for m in getattr(self, name) if m not in CNN_MODELS]
            require(not unknown, f"{name} has unknown models {unknown!r}; choose from {list(CNN_MODELS)}")
        object.__setattr__(self, "member_maps", {model: names(f"member_maps.{model}", maps, MAP_NAMES, "map")
                                                 for model, maps in self.member_maps.items()})

    def patience(self, model: str) -> int:
        """Epochs without a better validation accuracy after which ``model`` stops: its
        ``patiences`` entry, else ``early_stopping_patience``."""
        return self.patiences.get(model, self.early_stopping_patience)


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
    for value in values:
        check(value)
    require(len(set(values)) == len(values), f"{name} has duplicates, got {list(values)!r}")
    return tuple(values)


def _span(name: str, values: Any, low: float, high: float | None = None, *, integer: bool = False,
          open_high: bool = False) -> tuple:
    """A ``[low, high]`` search range with ``low <= high``, inside the allowed bounds."""
    kind = is_integer if integer else is_number
    require(isinstance(values, (list, tuple)) and len(values) == 2 and all(kind(v) for v in values),
            f"{name} must be a [low, high] pair of {'integers' if integer else 'numbers'}, got {values!r}")
    bounds = interval(low, high, high_open=open_high)
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
        choice("model", self.model, CNN_MODELS)
        choice("tuner", self.tuner, TUNERS)
        for name in ("max_trials", "max_epochs"):
            typed(name, getattr(self, name), int, "> 0", lambda v: v > 0)
        integer("hyperband_factor", self.hyperband_factor, MIN_HYPERBAND_FACTOR)
        fields = {
            "model_widths": tuple(float(w) for w in _choices("model_widths", self.model_widths,
                                                             lambda w: positive("model_widths entries", w))),
            "batch_sizes": _choices("batch_sizes", self.batch_sizes,
                                    lambda b: positive("batch_sizes entries", b, int)),
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
            require(isinstance(name, str) and bool(SET_NAME.match(name)),
                    f"map_sets name must be letters, digits, _ or -, got {name!r}")
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

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and bool(self.name) and self.name not in (".", "..")
                and not set(self.name) & set("/\\"),
                f"name must be a non-empty folder name (no / or \\; runs go to saved_models/<name>), "
                f"got {self.name!r}")
        check_feature_geometry(self.audio, self.features)
        closed_form = [m for m in self.train.models if m in CLOSED_FORM_MODELS]
        if closed_form:
            from tfbreath.models.pooled import MODULATION_BLOCK, UNPOOLED_MAPS  # the members' own (they import this)

            blocks = sorted(UNPOOLED_MAPS & set(self.features.maps))
            require(not blocks or self.features.n_mels >= MODULATION_BLOCK,
                    f"[features] n_mels must be >= {MODULATION_BLOCK} when [train] models has {closed_form} and maps "
                    f"has {blocks} (they read its first {MODULATION_BLOCK} rows), got {self.features.n_mels!r}")
        for model, maps in self.train.member_maps.items():
            missing = [m for m in maps if m not in self.features.maps]
            require(not missing, f"[train] member_maps.{model} names maps that [features] maps does not extract: "
                                 f"{missing!r}; extracted: {list(self.features.maps)}")

    @property
    def num_frames(self) -> int:
        """Time frames of every spectral map (centred STFT frames of one clip)."""
        return 1 + self.audio.num_samples // self.features.hop_length

    @property
    def spectral_shape(self) -> tuple[int, int, int]:
        """One clip's stacked maps: ``(n_mels, num_frames, len(maps))``."""
        return self.features.n_mels, self.num_frames, len(self.features.maps)


def check_feature_geometry(audio: AudioConfig, features: FeatureConfig) -> None:
    """What the in-graph features need of a clip: enough samples, and a rate that holds their bands.

    - ``filters.DELTA_WIDTH`` STFT frames, for the Savitzky-Golay deltas (mel and MFCC maps);
    - with scalars, ``scalars.AUTOCORR_SEARCH_S`` of autocorrelation lags (longer than both read
      lags) and a Nyquist frequency above the spectral contrast's top band;
    - ``fmax`` at or below the Nyquist frequency;
    - ``band_limit_hz`` off, or above the low-pass filter's transition band and at most Nyquist.
    """
    from tfbreath import filters, scalars  # the features' own constants (the feature modules import this one)

    rate, hop = audio.sample_rate, features.hop_length
    needs = [((filters.DELTA_WIDTH - 1) * hop, f"{filters.DELTA_WIDTH} STFT frames at hop_length {hop}")]
    if features.scalars:
        needs.append((round(rate * scalars.AUTOCORR_SEARCH_S),
                      f"{scalars.AUTOCORR_SEARCH_S} s of autocorrelation lags for the scalars"))
    samples, reason = max(needs)
    require(audio.num_samples >= samples,
            f"[audio] duration_s must be >= {samples / rate:g} s ({samples} samples at {rate} Hz: {reason}), "
            f"got {audio.duration_s!r}")
    nyquist = rate / 2.0
    require(features.fmax <= nyquist, f"[features] fmax must be <= the Nyquist frequency of [audio] sample_rate "
                                      f"({nyquist!r} Hz), got {features.fmax!r}")
    if features.band_limit_hz != NO_BAND_LIMIT:
        low, high = filters.LOWPASS_TRANSITION_HZ, nyquist
        require(low < features.band_limit_hz <= high,
                f"[features] band_limit_hz must be {NO_BAND_LIMIT!r} (off) or in ({low!r}, {high!r}] Hz (above the "
                f"filter's transition band, at most the Nyquist frequency of [audio] sample_rate), "
                f"got {features.band_limit_hz!r}")
    top_band_hz = scalars.CONTRAST_FMIN * 2.0 ** (scalars.N_BANDS - 1)  # where the last contrast band starts
    require(not features.scalars or nyquist > top_band_hz,
            f"[features] scalars = true needs [audio] sample_rate > {2 * top_band_hz:g} Hz (the spectral contrast's "
            f"top band starts at {top_band_hz:g} Hz), got {rate!r}; or set scalars = false")


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
    try:
        return PipelineConfig(name=raw.get("name", PipelineConfig.name), **sections)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def read_pipeline_text(path: str | Path) -> str:
    """A pipeline file's UTF-8 text; a missing, unreadable or non-UTF-8 file is a one-line ``ConfigError``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a pipeline file")
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        byte = err.object[err.start]
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{byte:02x} at offset {err.start})") from None


def load_config(path: str | Path) -> PipelineConfig:
    """Parse and validate a pipeline TOML file."""
    return parse_config(read_pipeline_text(path), source=str(path))


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


FEATURE_SECTIONS = ("audio", "features")
"""The sections the in-graph features depend on: a model's pipeline and another source must
agree on these to give the same inputs (training settings may differ)."""


def first_difference(ours: PipelineConfig, theirs: PipelineConfig,
                     sections: tuple[str, ...] = FEATURE_SECTIONS) -> str | None:
    """The first field of ``sections`` where two pipelines differ, as
    ``[section] key: <ours> vs <theirs>``; ``None`` when they agree there."""
    for section in sections:
        mine, other = getattr(ours, section), getattr(theirs, section)
        for field in dataclasses.fields(mine):
            value, other_value = getattr(mine, field.name), getattr(other, field.name)
            if value != other_value:
                return f"[{section}] {field.name}: {toml_value(value)} vs {toml_value(other_value)}"
    return None


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
