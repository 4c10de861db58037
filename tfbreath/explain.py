"""``python -m tfbreath.explain``: which input maps and scalars moved a clip's prediction.

    python -m tfbreath.explain [--model PATH] INPUT... --out DIR [--steps N] [--pipeline FILE]
    python -m tfbreath.explain [--model PATH] INPUT... --out DIR --summary

Attributions are integrated gradients (M. Sundararajan, A. Taly, Q. Yan, "Axiomatic Attribution
for Deep Networks", ICML 2017): for an input ``x``, a baseline ``x'`` and a scalar output ``f``,

    IG_i(x) = (x_i - x'_i) * integral_0^1 df/dx_i(x' + a (x - x')) da,

here a midpoint Riemann sum over ``--steps`` points (default ``IG_STEPS``). Its completeness
axiom, ``sum_i IG_i(x) = f(x) - f(x')``, holds up to the sum's error, which every JSON reports
(``completeness_gap``). The inputs are the model's own, ``{"spectral": [128, 63, 9], "scalars":
[39]}`` for the shipped pipeline: the nine named maps and the 39 named scalars
(``config.SCALAR_NAMES``), computed in-graph from the WAV (``features.extract_features``), so each
map cell and each scalar gets its share.

``f`` is the **logit of P(exhale)**, ``log P - log(1 - P)``: a member's own logit, and for an
ensemble ``P = sum_k alpha_k sigmoid(z_k)`` its logit computed stably from the members' logits.
The logit does not saturate as P does near 0 and 1, so a confident clip still gets attributions.
A positive attribution pushed the clip towards exhale (E), a negative one towards inhale (I).

The baseline (``BASELINE``) is zero in standardised feature space: every map zero, and every
scalar at the training mean the model standardises it with (its ``scalar_norm`` layer, else the
scalar part of the pooled member's ``pooled_norm``; zero for a model holding neither). Each map is
z-scored per clip, so zero is its own mean: a flat map without time or frequency structure (what
a silent clip gives). On the shipped four-member ensemble that baseline scores P(exhale) = 0.43,
while a silent clip scores 0.65 (silence's maps are the baseline's, its scalars, mostly zero, are
far from any breath's), so the standardised zero is the neutral point. The pooled member's
standard deviations have a gradient everywhere (``models.pooled.gradient_safe_sqrt``): a band
constant over the clip would otherwise make its whole map's gradient NaN.

Outputs, in ``--out DIR``:

- per clip, ``<stem>.png``: each map in grey with its attribution over it (red towards exhale,
  blue towards inhale, opaque where largest; a dashed line where a map's own bands end and its
  padding rows begin, ``maps.map_rows``), the scalars' attributions as bars, and the predicted
  label and P(exhale) in the title; ``<stem>.json``: prediction, logit, baseline logit, and per
  map and per scalar the attribution **mass** (the signed sum of its attributions, in logit
  units; the map's sum of absolute attributions beside it);
- with ``--summary``, instead: ``clips.csv`` (one row per clip: prediction and every input's
  mass), ``summary.csv`` and ``summary.json`` (maps and scalars together, ranked by the mean
  over clips of ``|mass|``: how far each input moved the logit, either way; beside it the mean
  signed mass over all clips and over the clips predicted I and E, whose difference shows what
  separates the classes) and ``summary.png`` (the ranking as bars, the per-label means as dots).

Files of one stem (from different folders) share their outputs: the last one explained stays.

``--model`` takes what predict takes (a run folder, a ``.keras`` file) as long as it is a Keras
model whose feature inputs can be reached: a run folder's ``ensemble.keras``, a member such as
``cnn8.keras`` from ``fit`` (with its pipeline, as predict finds it: ``classifier.feature_pipeline``),
or a waveform-input ``.keras`` from ``export`` (explained through the feature-input model inside
it). Without ``--model``: the shipped model's ``ensemble.keras``. A ``.tflite`` has no gradients:
an error. The model is loaded in float32 whatever it was trained under
(``serving.load_trained_model``), so gradients are float32. Each file is one clip: decoded and
resampled as predict decodes (``classifier.decode``), its first clip-length kept, repeated to fill it if short.

Messages go to stderr, one line each. A file that cannot be decoded is reported
(``skipped <file>: <problem>``) and skipped; a clip whose gradient is not finite stops the run
with an error naming it. Exit code: 0 every file explained; 1 some or all
skipped; 2 bad arguments, model or output folder (``error: <file or value>: <problem>``).
"""

from __future__ import annotations

import argparse
import dataclasses
import stat
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.special  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from tfbreath import artifacts, classifier, data, serving  # noqa: E402
from tfbreath.console import OneLineParser, add_verbose_argument  # noqa: E402
from tfbreath.config import ENSEMBLE, SCALAR_NAMES, SCALARS, SPECTRAL, ConfigError, PipelineConfig  # noqa: E402
from tfbreath.errors import EXIT_OK, EXIT_SKIPPED, TfbreathError, reported  # noqa: E402
from tfbreath.evaluation import THRESHOLD  # noqa: E402
from tfbreath.maps import map_rows  # noqa: E402
from tfbreath.models import SCALAR_NORM  # noqa: E402
from tfbreath.models.pooled import POOLED_NORM  # noqa: E402
from tfbreath.run_folder import MODEL_SUFFIX, TFLITE_SUFFIX, RunFolder  # noqa: E402

GAP_WARNING = 0.1
"""A completeness gap above this many logits is warned about (``incomplete_warning``): above the
largest (0.063) of the shipped model's on 200 real clips at ``IG_STEPS``."""
IG_STEPS = 256
"""Points of the midpoint Riemann sum along the path. On 200 real training clips with the shipped
ensemble of 2026-12-07 (CNN8 + pooled + rbf + temporal) the sum of the attributions then matches
logit(x) - logit(baseline) to a median 0.008 logit, at most 0.063 (``completeness_gap``); with the
three-member ensemble of 2026-12-06, on 40 clips, a median 0.002, at most 0.012. An older refit needed them:
it left a median 0.047, at most 0.062, and 128 steps a median 0.12, at most 0.18. That gap was
its CNN8 member's: alone, on a synthetic exhale, it left 0.60 at 128 steps and 0.31 at 512 (its
ReLU gradient along the path is piecewise constant and, in that refit, rough), where the rbf
member left 1e-4 and the pooled member 0. The cost is linear in the steps
(the two-member ensemble's 200 clips took 3 to 4.6 min at 128 on two shared CPU cores, when
128 steps left it a median 0.017)."""

IG_BATCH = 32
"""Path points per gradient call: bounds memory (a point of the shipped pipeline is ~0.3 MB of
features, its activations several times that) whatever ``--steps`` is."""

FEATURE_BATCH = 64
"""Clips per feature-extraction call."""

BASELINE = "zero maps, scalars at the model's training mean (zero in standardised feature space)"
"""What ``baseline_features`` returns, as the JSON states it."""

TARGET = "logit of P(exhale)"
"""The output attributed, as the JSON states it; its unit is the unit of every mass."""

SUMMARY_KEY = "mean_abs_mass"
"""What ``--summary`` ranks by: the mean over clips of an input's |signed mass|."""

MASS_DIGITS = 7
"""Significant digits of a mass in the CSVs."""

MAP, SCALAR = "map", "scalar"
"""The two kinds of input a mass belongs to."""

GRID_COLUMNS = 3
"""Map panels per row of a clip's figure."""
PANEL_SIZE = (4.0, 2.6)
"""Inches per map panel."""
SCALAR_PANEL_HEIGHT = 3.0
"""Inches of the scalar bar panel below the maps."""
OVERLAY_PERCENTILE = 99.0
"""The colour scale of a clip's overlays ends at this percentile of its |attributions| over all
maps (shared, so maps compare; a percentile, so a few extreme cells do not wash out the rest)."""
OVERLAY_MAX_ALPHA = 0.85
"""Opacity of the overlay where |attribution| reaches the scale: the map shows through elsewhere."""
ATTRIBUTION_CMAP = "RdBu_r"
"""Red towards exhale (positive), blue towards inhale."""
SUMMARY_BAR_HEIGHT = 0.22
"""Inches per input in the summary's bar plot."""
SUMMARY_WIDTH, SUMMARY_MARGIN = 8.0, 1.5
"""Inches: the summary plot's width, and its height beyond the bars (title, axis)."""
COLOURBAR_FRACTION = 0.03
"""Share of the figure's width the attribution colour bar takes."""
LABELS = (classifier.INHALE, classifier.EXHALE)
KIND_COLOURS = {MAP: "tab:purple", SCALAR: "tab:green"}


class ExplainError(TfbreathError, RuntimeError):
    """Bad arguments or a model that cannot be explained: one ``error:`` line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# The model: a feature-input Keras model and its logit
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Explained:
    """A feature-input model, float32, with the pipeline that makes its inputs."""

    model: keras.Model
    pipeline: PipelineConfig
    description: str

    @property
    def map_names(self) -> tuple[str, ...]:
        return self.pipeline.features.maps

    @property
    def scalar_names(self) -> tuple[str, ...]:
        return SCALAR_NAMES if SCALARS in self.model.input else ()


def _has_weights(layer: keras.layers.Layer) -> bool:
    return bool(layer.weights)


def feature_input_core(model: keras.Model) -> keras.Model:
    """The feature-input model inside ``model``: ``model`` itself, or, while ``model`` only wraps
    one nested model in weightless layers (a waveform ``.keras``: ``FeatureExtractor`` ->
    probability wrapper -> sigmoid), that nested model."""
    while True:
        nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        others = [layer for layer in model.layers if not isinstance(layer, keras.Model)]
        if len(nested) != 1 or any(_has_weights(layer) for layer in others):
            return model
        model = nested[0]


Target = Callable[[dict[str, tf.Tensor]], tf.Tensor]
"""A model's output to attribute: ``{name: [B, ...]} -> [B]``."""


def logit_target(model: keras.Model) -> Target:
    """The logit of P(exhale): a member's output, or an ensemble's from its members' logits
    ``z_k`` and weights ``alpha_k``,

        log P = logsumexp_k(log alpha_k + log sigmoid(z_k)),
        log(1 - P) = logsumexp_k(log alpha_k + log sigmoid(-z_k)),

    both finite however confident the members are.
    """
    if not serving.outputs_probability(model):
        return lambda inputs: tf.reshape(model(inputs), [-1])  # [B]
    average = model.layers[-1]
    members = keras.Model(model.input, average.input)  # -> K x [B, 1] logits
    log_alphas = tf.math.log(tf.constant(average.alphas, tf.float32))[:, tf.newaxis]  # [K, 1]

    def logit(inputs):
        z = tf.concat([tf.reshape(x, [1, -1]) for x in members(inputs)], axis=0)  # [K, B]
        log_p = tf.reduce_logsumexp(log_alphas + tf.math.log_sigmoid(z), axis=0)  # [B]
        log_q = tf.reduce_logsumexp(log_alphas + tf.math.log_sigmoid(-z), axis=0)  # [B]
        return log_p - log_q  # [B]

    return logit


def _normalisation_mean(model: keras.Model, name: str) -> np.ndarray | None:
    """The mean of the first ``Normalization`` layer called ``name`` in ``model`` (nested too)."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Normalization) and layer.name == name:
            return np.reshape(keras.ops.convert_to_numpy(layer.mean), -1).astype(np.float32)
    return None


def baseline_features(model: keras.Model) -> dict[str, np.ndarray]:
    """``BASELINE`` for one clip: ``{"spectral": zeros [M, T, C], "scalars": mean [S]}``.

    The scalar mean is the ``scalar_norm`` layer's (CNN members), else the last ``S`` entries of
    ``pooled_norm``'s (the pooled member appends the raw scalars to its statistics), else zero.
    """
    shapes = {name: tuple(x.shape[1:]) for name, x in model.input.items()}
    baseline = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    if SCALARS in shapes:
        n = shapes[SCALARS][0]
        scalar_mean = _normalisation_mean(model, SCALAR_NORM)
        pooled_mean = _normalisation_mean(model, POOLED_NORM)
        if scalar_mean is not None:
            baseline[SCALARS] = scalar_mean
        elif pooled_mean is not None:
            baseline[SCALARS] = pooled_mean[-n:]
    return baseline


def _keras_model(path: Path, pipeline_arg: Path | None, description: str) -> Explained:
    """A ``.keras`` file as a feature-input model and its pipeline (carried, beside it, or inside
    a waveform model's ``FeatureExtractor``)."""
    model = classifier.load_keras_model(path)
    extractor = classifier.feature_extractor(model)
    pipeline = extractor.pipeline if extractor is not None else classifier.feature_pipeline(path, pipeline_arg)
    if extractor is not None and pipeline_arg is not None:
        print(f"note: {path} carries its own pipeline; --pipeline {pipeline_arg} is not used", file=sys.stderr)
    core = feature_input_core(model)
    if not isinstance(core.input, dict) or SPECTRAL not in core.input:
        raise ExplainError(f"{path}: explain needs a Keras model taking {{{SPECTRAL!r}, {SCALARS!r}}} "
                           f"features (or a waveform model holding one); this one takes "
                           f"{keras.tree.map_structure(lambda x: tuple(x.shape), core.input)}")
    outputs = tuple(core.output.shape[1:]) if not isinstance(core.output, (list, tuple, dict)) else None
    if outputs not in ((1,), ()):
        raise ExplainError(f"{path}: explain needs a model with one output per clip (a logit or P(exhale)); "
                           f"this one gives {keras.tree.map_structure(lambda x: tuple(x.shape), core.output)}")
    made = {SPECTRAL: pipeline.spectral_shape,
            SCALARS: (pipeline.features.n_scalars,)}
    wanted = {name: tuple(x.shape[1:]) for name, x in core.input.items()}
    if any(made.get(name) != shape for name, shape in wanted.items()):
        raise ExplainError(f"{path}: the model takes {wanted}, but its pipeline {pipeline.name!r} makes {made}")
    return Explained(core, pipeline, description)


def load_explained(path: Path | None, pipeline_arg: Path | None = None) -> Explained:
    """What ``--model`` names (default: the shipped ``ensemble.keras``) as an ``Explained``."""
    path = classifier.DEFAULT_MODEL_DIR if path is None else Path(path)
    mode = classifier.model_path_mode(path)
    try:
        if stat.S_ISDIR(mode):
            ensemble = RunFolder(path).model_file(ENSEMBLE)
            if not ensemble.is_file():
                raise ExplainError(f"{path}: not a run folder (no {ensemble.name}); --model takes a run "
                                   f"folder or a {MODEL_SUFFIX} file")
            return _keras_model(ensemble, pipeline_arg, f"run {path} ({ENSEMBLE})")
        if stat.S_ISREG(mode) and path.suffix == MODEL_SUFFIX:
            return _keras_model(path, pipeline_arg, str(path))
    except ConfigError as err:
        raise ExplainError(str(err)) from None
    if stat.S_ISREG(mode) and path.suffix == TFLITE_SUFFIX:
        raise ExplainError(f"{path}: explain needs a feature-input Keras model (a run folder or a "
                           f"{MODEL_SUFFIX} file), a {TFLITE_SUFFIX} file has no gradients; pass the "
                           f"{MODEL_SUFFIX} it was exported from")
    raise ExplainError(f"{path}: not a model; --model takes a run folder or a {MODEL_SUFFIX} file")


# ---------------------------------------------------------------------------------------------
# Integrated gradients
# ---------------------------------------------------------------------------------------------
def path_points(steps: int) -> np.ndarray:
    """Midpoints ``(k + 1/2) / steps`` of ``steps`` equal cells of [0, 1]. ``[steps]``"""
    if steps < 1:
        raise ExplainError(f"steps must be >= 1, got {steps}")
    return ((np.arange(steps) + 0.5) / steps).astype(np.float32)


class IntegratedGradients:
    """Integrated gradients of a ``Target`` over ``steps`` path points, one example per call."""

    def __init__(self, target: Target, steps: int = IG_STEPS, batch: int = IG_BATCH):
        self.alphas = path_points(steps)
        self.batch = batch
        self.target = target
        self._gradient_sum = tf.function(self._path_gradient_sum, reduce_retracing=True)

    def _path_gradient_sum(self, x: dict[str, tf.Tensor], x0: dict[str, tf.Tensor],
                           alphas: tf.Tensor) -> dict[str, tf.Tensor]:
        """Sum over ``alphas [A]`` of the gradient at ``x0 + alpha (x - x0)``. each ``[...]``"""
        points = {name: x0[name] + tf.reshape(alphas, [-1] + [1] * x[name].shape.rank) * (x[name] - x0[name])
                  for name in x}  # each [A, ...]
        with tf.GradientTape() as tape:
            tape.watch(points)
            total = tf.reduce_sum(self.target(points))  # []
        gradients = tape.gradient(total, points, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return {name: tf.reduce_sum(g, axis=0) for name, g in gradients.items()}  # each [...]: 0 for an unread input

    def __call__(self, inputs: dict[str, np.ndarray], baseline: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Attributions for one example: ``inputs`` and ``baseline`` map each input name to an
        array without batch axis; the result has the same names and shapes and sums to
        ``target(inputs) - target(baseline)`` up to the Riemann sum's error."""
        x = {name: tf.constant(value, tf.float32) for name, value in inputs.items()}  # each [...]
        x0 = {name: tf.constant(baseline[name], tf.float32) for name in inputs}  # each [...]
        sums = {name: np.zeros(value.shape, np.float64) for name, value in inputs.items()}
        for first in range(0, len(self.alphas), self.batch):
            for name, g in self._gradient_sum(x, x0, tf.constant(self.alphas[first:first + self.batch])).items():
                sums[name] += g.numpy()
        return {name: ((inputs[name] - baseline[name]) * sums[name] / len(self.alphas)).astype(np.float32)
                for name in inputs}


# ---------------------------------------------------------------------------------------------
# One clip's explanation
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Explanation:
    """One clip: its features, their attributions and the prediction."""

    id: str
    path: Path
    features: dict[str, np.ndarray]
    """``{"spectral": [M, T, C], "scalars": [S]}``"""
    attributions: dict[str, np.ndarray]
    """Same names and shapes as ``features``."""
    logit: float
    baseline_logit: float

    @property
    def probability(self) -> float:
        return float(scipy.special.expit(self.logit))  # no overflow at logits far below -709

    @property
    def total(self) -> float:
        return float(sum(float(np.sum(a, dtype=np.float64)) for a in self.attributions.values()))

    @property
    def completeness_gap(self) -> float:
        """``sum(attributions) - (logit - baseline_logit)``: the Riemann sum's error, large where
        the output leaps along the path faster than the steps resolve (``incomplete_warning``)."""
        return self.total - (self.logit - self.baseline_logit)


def incomplete_warning(explanation: Explanation) -> str | None:
    """A one-line warning when the attributions miss more than ``GAP_WARNING`` of the logit's move."""
    gap = explanation.completeness_gap
    if abs(gap) <= GAP_WARNING:
        return None
    return (f"warning: {explanation.path}: the attributions miss {gap:+.3f} of the logit's move from the "
            f"baseline ({explanation.logit - explanation.baseline_logit:+.3f}): the output leaps along the path "
            f"(an input far outside the training range, e.g. digital silence?); more --steps may help")


def masses(explanation: Explanation, explained: Explained) -> dict[str, tuple[str, float, float]]:
    """Input name -> ``(kind, signed mass, absolute mass)``: per map the sum over its channel
    (padding rows included: the model reads them) of its attributions and of their absolute
    values; per scalar its attribution, twice."""
    spectral = explanation.attributions[SPECTRAL].astype(np.float64)  # [M, T, C]
    out = {name: (MAP, float(spectral[..., c].sum()), float(np.abs(spectral[..., c]).sum()))
           for c, name in enumerate(explained.map_names)}
    if explained.scalar_names:
        scalars = explanation.attributions[SCALARS].astype(np.float64)  # [S]
        out.update({name: (SCALAR, float(a), float(abs(a))) for name, a in zip(explained.scalar_names, scalars)})
    return out


def explanation_json(explanation: Explanation, explained: Explained) -> dict:
    """The per-clip JSON: prediction, target, baseline and every input's mass."""
    label = classifier.target(explanation.probability, THRESHOLD)
    by_name = masses(explanation, explained)
    return {
        "id": explanation.id, "file": str(explanation.path), "model": explained.description,
        "label": label, "probability": round(explanation.probability, classifier.PROBABILITY_DECIMALS),
        "target": TARGET, "logit": explanation.logit, "baseline": BASELINE,
        "baseline_logit": explanation.baseline_logit, "attribution_total": explanation.total,
        "completeness_gap": explanation.completeness_gap,
        "maps": {name: {"mass": signed, "abs_mass": absolute}
                 for name, (kind, signed, absolute) in by_name.items() if kind == MAP},
        "scalars": {name: signed for name, (kind, signed, _) in by_name.items() if kind == SCALAR},
    }


def explain_clips(explained: Explained, ids: Sequence[str], paths: Sequence[Path], waveforms: np.ndarray,
                  steps: int = IG_STEPS) -> Iterator[Explanation]:
    """Features (in-graph, as the model saw them in training) and their attributions, clip by clip
    (a generator: only one clip's attributions are held at a time). ``waveforms`` is
    ``[N, samples]`` at the pipeline's rate."""
    extractor = serving.feature_model(explained.pipeline)
    target = logit_target(explained.model)
    attribute = IntegratedGradients(target, steps)
    baseline = baseline_features(explained.model)
    names = list(explained.model.input)
    batched = {name: value[np.newaxis] for name, value in baseline.items()}  # each [1, ...]
    baseline_logit = float(target(batched).numpy()[0])
    for first in tqdm(range(0, len(waveforms), FEATURE_BATCH), desc="explain", unit="batch",
                      leave=False, disable=None):
        features = extractor.predict_on_batch(waveforms[first:first + FEATURE_BATCH])
        logits = target({name: features[name] for name in names}).numpy()  # [b]
        for i, logit in enumerate(logits):
            clip = {name: np.asarray(features[name][i]) for name in names}
            attributions = attribute(clip, baseline)
            k = first + i
            if not all(np.isfinite(a).all() for a in attributions.values()):
                raise ExplainError(f"{paths[k]}: the gradient of {explained.description} is not finite on this "
                                   f"clip; no attribution can be made")
            explanation = Explanation(ids[k], paths[k], clip, attributions, float(logit), baseline_logit)
            warning = incomplete_warning(explanation)
            if warning:
                tqdm.write(warning, file=sys.stderr)
            yield explanation


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def _overlay(attribution: np.ndarray, scale: float) -> np.ndarray:
    """RGBA of an attribution map: diverging colour, opacity growing with |a| / scale. ``[M, T] -> [M, T, 4]``"""
    share = np.clip(attribution / scale, -1.0, 1.0)  # [M, T]
    rgba = plt.get_cmap(ATTRIBUTION_CMAP)((share + 1.0) / 2.0)  # [M, T, 4]
    rgba[..., 3] = np.abs(share) * OVERLAY_MAX_ALPHA
    return rgba


def _title(explanation: Explanation) -> str:
    label = classifier.target(explanation.probability, THRESHOLD)
    return (f"{explanation.id}: predicted {data.LABEL_WORDS[label]} ({label}), P(exhale) = "
            f"{explanation.probability:.3f}\nintegrated gradients on the {TARGET}: {explanation.logit:+.2f} vs "
            f"{explanation.baseline_logit:+.2f} at the baseline; attributions sum to {explanation.total:+.2f}")


def plot_explanation(explanation: Explanation, explained: Explained, path: Path) -> Path:
    """Every map with its attribution over it, the scalars' attributions below, in one PNG."""
    spectral, attribution = explanation.features[SPECTRAL], explanation.attributions[SPECTRAL]  # [M, T, C] each
    names = explained.map_names
    own_rows = map_rows(explained.pipeline.features)
    grid_rows = -(-len(names) // GRID_COLUMNS)
    has_scalars = bool(explained.scalar_names)
    height = grid_rows * PANEL_SIZE[1] + (SCALAR_PANEL_HEIGHT if has_scalars else 0.0)
    figure = plt.figure(figsize=(GRID_COLUMNS * PANEL_SIZE[0], height), layout="constrained")
    ratios = [PANEL_SIZE[1]] * grid_rows + ([SCALAR_PANEL_HEIGHT] if has_scalars else [])
    grid = figure.add_gridspec(len(ratios), GRID_COLUMNS, height_ratios=ratios)
    scale = max(float(np.percentile(np.abs(attribution), OVERLAY_PERCENTILE)), np.finfo(np.float32).tiny)
    by_name = masses(explanation, explained)
    for c, name in enumerate(names):
        ax = figure.add_subplot(grid[c // GRID_COLUMNS, c % GRID_COLUMNS])
        ax.imshow(spectral[..., c], origin="lower", aspect="auto", cmap="gray", interpolation="nearest")
        ax.imshow(_overlay(attribution[..., c], scale), origin="lower", aspect="auto", interpolation="nearest")
        if own_rows[name] < spectral.shape[0]:
            ax.axhline(own_rows[name] - 0.5, color="yellow", linestyle="--", linewidth=0.8)
        ax.set_title(f"{name}: mass {by_name[name][1]:+.3f}", fontsize=9)
        ax.set_xlabel("frame", fontsize=7)
        ax.set_ylabel("row", fontsize=7)
        ax.tick_params(labelsize=6)
    mappable = plt.cm.ScalarMappable(cmap=ATTRIBUTION_CMAP, norm=plt.Normalize(-scale, scale))
    figure.colorbar(mappable, ax=figure.axes, fraction=COLOURBAR_FRACTION,
                    label="attribution per cell (+ towards exhale)")
    if has_scalars:
        ax = figure.add_subplot(grid[grid_rows, :])
        values = explanation.attributions[SCALARS]
        ax.bar(range(len(values)), values, color=np.where(values >= 0, "tab:red", "tab:blue"))
        ax.set_xticks(range(len(values)), explained.scalar_names, rotation=90, fontsize=6)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_ylabel("attribution", fontsize=8)
        ax.set_title("scalars", fontsize=9)
    figure.suptitle(_title(explanation), fontsize=10)
    return artifacts.save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# Dataset summary
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClipSummary:
    """What the dataset summary keeps of one clip's ``Explanation``."""

    id: str
    label: str
    probability: float
    logit: float
    baseline_logit: float
    completeness_gap: float
    masses: dict[str, tuple[str, float, float]]
    """``masses(explanation, explained)``"""

    @classmethod
    def of(cls, explanation: Explanation, explained: Explained) -> "ClipSummary":
        return cls(explanation.id, classifier.target(explanation.probability, THRESHOLD), explanation.probability,
                   explanation.logit, explanation.baseline_logit, explanation.completeness_gap,
                   masses(explanation, explained))


@dataclasses.dataclass(frozen=True)
class Ranked:
    """One input's place in the summary: mean over clips of its |mass| and of its signed mass,
    over all clips and over the clips predicted each label (``None`` if there are none)."""

    name: str
    kind: str
    mean_abs_mass: float
    mean_mass: float
    mean_mass_by_label: dict[str, float | None]


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def rank_inputs(clips: Sequence[ClipSummary]) -> list[Ranked]:
    """Maps and scalars together, by the mean over clips of ``|signed mass|`` (``SUMMARY_KEY``), largest first."""
    names = list(clips[0].masses)
    signed = np.array([[clip.masses[name][1] for name in names] for clip in clips])  # [N, inputs]
    labels = np.array([clip.label for clip in clips])  # [N]
    ranked = [Ranked(name, clips[0].masses[name][0], float(np.mean(np.abs(signed[:, j]))),
                     float(np.mean(signed[:, j])),
                     {label: _mean_or_none(signed[labels == label, j]) for label in LABELS})
              for j, name in enumerate(names)]
    return sorted(ranked, key=lambda r: r.mean_abs_mass, reverse=True)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.{MASS_DIGITS}g}"


def clips_csv(clips: Sequence[ClipSummary]) -> str:
    """One row per clip: ``ID,Target,Probability,logit,baseline_logit,completeness_gap`` then every input's mass."""
    names = list(clips[0].masses)
    rows = [[c.id, c.label, f"{c.probability:.{classifier.PROBABILITY_DECIMALS}f}", _number(c.logit),
             _number(c.baseline_logit), _number(c.completeness_gap), *(_number(c.masses[n][1]) for n in names)]
            for c in clips]
    return artifacts.format_csv(["ID", "Target", "Probability", "logit", "baseline_logit", "completeness_gap", *names],
                              rows)


def summary_csv(ranking: Sequence[Ranked]) -> str:
    """``rank,name,kind,mean_abs_mass,mean_mass,mean_mass_I,mean_mass_E`` (empty: no clip predicted that label)."""
    return artifacts.format_csv(
        ["rank", "name", "kind", SUMMARY_KEY, "mean_mass", *(f"mean_mass_{label}" for label in LABELS)],
        [[str(i), r.name, r.kind, _number(r.mean_abs_mass), _number(r.mean_mass),
          *(_number(r.mean_mass_by_label[label]) for label in LABELS)] for i, r in enumerate(ranking, start=1)])


def summary_json(ranking: Sequence[Ranked], clips: Sequence[ClipSummary], description: str) -> dict:
    return {"model": description, "clips": len(clips), "target": TARGET, "baseline": BASELINE,
            "ranked_by": SUMMARY_KEY, "max_abs_completeness_gap": max(abs(c.completeness_gap) for c in clips),
            "ranking": [dataclasses.asdict(r) for r in ranking]}


def plot_summary(ranking: Sequence[Ranked], n_clips: int, description: str, path: Path) -> Path:
    """Horizontal bars of mean |mass|, largest on top, coloured by kind; a dot at the mean signed
    mass of the clips predicted each label, in that label's colour."""
    figure, ax = plt.subplots(figsize=(SUMMARY_WIDTH, SUMMARY_MARGIN + SUMMARY_BAR_HEIGHT * len(ranking)),
                              layout="constrained")
    order = list(reversed(ranking))
    y = np.arange(len(order))
    ax.barh(y, [r.mean_abs_mass for r in order], color=[KIND_COLOURS[r.kind] for r in order])
    for label in LABELS:
        means = [np.nan if r.mean_mass_by_label[label] is None else r.mean_mass_by_label[label] for r in order]
        ax.plot(means, y, "o", color=classifier.PHASE_COLOURS[label], markersize=3,
                label=f"mean signed mass, clips predicted {data.LABEL_WORDS[label]} ({label})")
    ax.set_yticks(y, [r.name for r in order], fontsize=7)
    ax.axvline(0.0, color="black", linewidth=0.5)
    handles = [matplotlib.patches.Patch(color=colour, label=f"{kind}: mean |mass|") for kind, colour in KIND_COLOURS.items()]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="lower right")
    ax.set(xlabel=f"attribution mass ({TARGET} units)",
           title=f"integrated gradients over {n_clips} clip(s)\n{description}")
    return artifacts.save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m tfbreath.explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="WAV files or folders of WAV files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help=f"run folder or {MODEL_SUFFIX} (default: {classifier.DEFAULT_MODEL_DIR})")
    parser.add_argument("--summary", action="store_true",
                        help="rank maps and scalars over all clips (clips.csv, summary.csv/.json/.png) "
                             "instead of one PNG and JSON per clip")
    parser.add_argument("--steps", type=int, default=IG_STEPS, metavar="N",
                        help=f"integrated-gradients path points (default {IG_STEPS})")
    parser.add_argument("--pipeline", type=Path, metavar="FILE",
                        help=f"pipeline TOML for a feature-input {MODEL_SUFFIX} without one beside it")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def _decoded(files: Sequence[Path], pipeline: PipelineConfig) -> tuple[list[Path], np.ndarray]:
    """The files that decode, and their first clip each (repeated to fill it if short). ``-> [N, samples]``"""
    clip = pipeline.audio.num_samples
    audios = classifier.decode(files, pipeline.audio.sample_rate)
    kept = [(path, audio) for path, audio in zip(files, audios) if audio is not None]
    for path, audio in kept:
        if len(audio) > clip:
            print(f"note: {path}: longer than one clip; explaining its first {pipeline.audio.duration_s:g} s",
                  file=sys.stderr)
    waveforms = np.stack([classifier.window(audio, 0, clip) for _, audio in kept]) if kept else np.zeros((0, clip))
    return [path for path, _ in kept], waveforms.astype(np.float32)


def _write_per_clip(explanations: Iterator[Explanation], explained: Explained, out: Path) -> None:
    """Each clip's JSON and PNG, written as it is explained."""
    count = 0
    for count, e in enumerate(explanations, start=1):
        artifacts.write_json(out / f"{e.path.stem}.json", explanation_json(e, explained))
        plot_explanation(e, explained, out / f"{e.path.stem}.png")
    print(f"wrote {count} PNG and JSON pair(s) to {out}", file=sys.stderr)


def _write_summary(explanations: Iterator[Explanation], explained: Explained, out: Path) -> None:
    """The per-clip table, the ranking and its plot."""
    clips = [ClipSummary.of(e, explained) for e in explanations]
    ranking = rank_inputs(clips)
    artifacts.write_text(out / "clips.csv", clips_csv(clips))
    artifacts.write_text(out / "summary.csv", summary_csv(ranking))
    artifacts.write_json(out / "summary.json", summary_json(ranking, clips, explained.description))
    plot_summary(ranking, len(clips), explained.description, out / "summary.png")
    top = ", ".join(f"{r.name} {r.mean_abs_mass:.3f}" for r in ranking[:5])
    print(f"wrote clips.csv, summary.csv, summary.json, summary.png to {out}; top by {SUMMARY_KEY}: {top}",
          file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Check the output folder, load, decode, attribute, write; return the exit code."""
    artifacts.check_writable(args.out, folder=True)
    files = data.collect_wav_files(args.inputs)
    explained = load_explained(args.model, args.pipeline)
    print(f"model: {explained.description}; attributing the {TARGET} over {args.steps} steps", file=sys.stderr)
    paths, waveforms = _decoded(files, explained.pipeline)
    skipped = len(files) - len(paths)
    if not paths:
        print("no file could be decoded; nothing written", file=sys.stderr)
        return EXIT_SKIPPED
    explanations = explain_clips(explained, [p.name for p in paths], paths, waveforms, args.steps)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        (_write_summary if args.summary else _write_per_clip)(explanations, explained, args.out)
    except OSError as err:
        raise ExplainError(f"{args.out}: cannot write the explanations ({err.strerror})") from None
    if skipped:
        print(f"skipped {skipped} of {len(files)} file(s) (reasons above)", file=sys.stderr)
    return EXIT_SKIPPED if skipped else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # tfio's resampler warns about retracing on every new length
    return reported(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
