"""RespireNet's classifier: a ResNet-34 backbone + two 128-unit dense layers + softmax, in Keras.

    model = build_respirenet((128, 112, 1), num_classes=4, model_config=config.model)
    probabilities = model(spectrograms)          # [B, H, W, 1] -> [B, classes] float32

The backbone is torchvision's ResNet-34 (the network the authors fine-tune): a 7x7/2 stem conv,
a 3x3/2 max-pool, four stages of basic blocks ([3, 4, 6, 3] blocks, 64/128/256/512 filters,
stride 2 and a 1x1 projection at the start of stages 2-4) and global average pooling. Padding is
explicit and symmetric, and BatchNorm uses PyTorch's momentum/epsilon, so weights converted
from a torchvision checkpoint give the same activations. The backbone reads three channels, as
ImageNet weights expect: the grey dB-mel spectrogram (one channel) is repeated to three inside
the model, and the authors' colour-mapped RGB rendering (``[spectrogram] input = "image"``)
goes in as it is, normalised per channel by the training set's mean and std in the model's first
layer (``channel_statistics``), so a saved model carries its normalisation.

The head follows the authors' code: dropout -> Dense(128) -> ReLU -> dropout -> Dense(128) ->
ReLU -> Dense(classes) -> softmax. The softmax runs in float32 under a mixed precision policy.

``model_config.width`` multiplies every conv width (1.0 = ResNet-34; tests use 1/16), and
``model_config.initial_weights`` names a local file to start from (nothing is downloaded):
a ``.weights.h5`` of the backbone (what :func:`save_backbone_weights` writes, e.g. after
converting ImageNet weights) or a ``.keras`` RespireNet model (e.g. another run's
``stage1.keras``), whose backbone is taken. ``model_config.imagenet_weights`` instead names a
torchvision ResNet-34 state dict (the ``.pth`` the authors start from), converted by
:mod:`tfbreath.icbhi.torchvision_weights` (width 1.0 only).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from tfbreath.icbhi.reader import IcbhiError
from tfbreath.icbhi.torchvision_weights import load_imagenet_weights
from tfbreath.models.blocks import CONV_INITIALIZER, batch_norm, scaled
from tfbreath.run_folder import MODEL_SUFFIX

if TYPE_CHECKING:
    from tfbreath.icbhi.config import ModelConfig

BACKBONE = "resnet34"
"""Name of the backbone sub-model inside a RespireNet model (and the only backbone built)."""
SPECTROGRAM_INPUT = "spectrogram"
PROBABILITIES = "probabilities"
"""Name of the float32 softmax output layer."""

STAGE_BLOCKS = (3, 4, 6, 3)
"""Basic blocks per stage of ResNet-34."""
STAGE_FILTERS = (64, 128, 256, 512)
"""Conv filters per stage at width 1.0."""
STEM_KERNEL, STEM_STRIDE = 7, 2
POOL_SIZE, POOL_STRIDE = 3, 2
BLOCK_KERNEL = 3
HEAD_LAYERS = 2
"""Dense(dense_units) + ReLU layers, each after a dropout, between the backbone and the softmax."""
BACKBONE_CHANNELS = 3
"""The backbone reads RGB-like input, so ImageNet-trained weights fit its first conv."""
PROBABILITIES_DTYPE = "float32"
NORMALIZATION = "channel_normalization"
"""Name of the per-channel normalisation layer of an image-input model."""
NORMALIZATION_DTYPE = "float32"
"""The normalisation subtracts the mean in float32 whatever the policy (bfloat16 keeps 3 digits)."""
WEIGHTS_SUFFIX = ".weights.h5"
SHAPE_MISMATCH = re.compile(r"variable\.shape=\([^)]*\), Received: value\.shape=\([^)]*\)")
"""The informative part of Keras' error for a weight of the wrong shape."""


def _padded_conv(x, filters: int, kernel: int, stride: int, name: str):
    """Bias-free conv with torchvision's symmetric ``kernel // 2`` padding. ``[B,H,W,*] -> [B,H/s,W/s,F]``

    Keras' ``"same"`` pads stride-2 convs on the bottom/right only, which shifts converted weights.
    """
    x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=False,
                               kernel_initializer=CONV_INITIALIZER, name=name)(x)


def _basic_block(x, filters: int, stride: int, name: str):
    """Two 3x3 conv+BN with an identity (or 1x1 conv+BN projection) shortcut. ``[B,H,W,*] -> [B,H/s,W/s,F]``"""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                       kernel_initializer=CONV_INITIALIZER, name=f"{name}_proj")(x)
        shortcut = batch_norm(f"{name}_proj_bn")(shortcut)
    y = _padded_conv(x, filters, BLOCK_KERNEL, stride, f"{name}_conv1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(f"{name}_bn1")(y))
    y = _padded_conv(y, filters, BLOCK_KERNEL, 1, f"{name}_conv2")
    y = batch_norm(f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_resnet34_backbone(width: float = 1.0) -> keras.Model:
    """ResNet-34 without its classifier: ``[B, H, W, 3] -> [B, 512 * width]`` (global average pool)."""
    inputs = keras.Input((None, None, BACKBONE_CHANNELS), name=f"{BACKBONE}_input")
    x = _padded_conv(inputs, scaled(STAGE_FILTERS[0], width), STEM_KERNEL, STEM_STRIDE, "stem_conv")
    x = keras.layers.ReLU(name="stem_relu")(batch_norm("stem_bn")(x))
    # Zero padding before the max-pool equals torchvision's -inf padding: the input is >= 0 after ReLU.
    x = keras.layers.ZeroPadding2D(POOL_SIZE // 2, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(POOL_SIZE, strides=POOL_STRIDE, name="stem_pool")(x)
    for stage, (blocks, filters) in enumerate(zip(STAGE_BLOCKS, STAGE_FILTERS), start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, scaled(filters, width), stride, f"stage{stage}_block{block + 1}")
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=BACKBONE)


def build_respirenet(input_shape: tuple[int, int, int], num_classes: int, model_config: ModelConfig,
                     channel_statistics: tuple[np.ndarray, np.ndarray] | None = None) -> keras.Model:
    """The RespireNet classifier for ``[H, W, C]`` spectrograms: ``[B, H, W, C] -> [B, num_classes]``.

    ``C`` is 1 (the grey dB-mel spectrogram, repeated to the backbone's 3 channels) or 3 (an RGB
    rendering, ``[spectrogram] input = "image"``). ``channel_statistics`` = ``(mean [C], std [C])``
    (``image.channel_statistics``) puts ``(x - mean) / std`` per channel at the input, as a
    ``keras.layers.Normalization`` saved with the model. Loads ``model_config.initial_weights`` or
    converts ``model_config.imagenet_weights`` (a torchvision ``.pth``) into the backbone when set;
    raises :class:`IcbhiError` if that file is missing or does not fit.
    """
    if model_config.backbone != BACKBONE:
        raise IcbhiError(f"model backbone must be {BACKBONE!r}, got {model_config.backbone!r}")
    channels = input_shape[-1]
    if channels not in (1, BACKBONE_CHANNELS):
        raise IcbhiError(f"spectrogram input must have 1 or {BACKBONE_CHANNELS} channels, got shape {input_shape}")
    inputs = keras.Input(tuple(input_shape), name=SPECTROGRAM_INPUT)
    x = inputs
    if channel_statistics is not None:
        mean, std = (np.asarray(s, np.float32) for s in channel_statistics)
        if mean.shape != (channels,) or std.shape != (channels,):
            raise IcbhiError(f"channel statistics must be {channels} means and stds, "
                             f"got shapes {mean.shape} and {std.shape}")
        x = keras.layers.Normalization(mean=mean, variance=np.square(std), name=NORMALIZATION,
                                       dtype=NORMALIZATION_DTYPE)(x)
    if channels == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x] * BACKBONE_CHANNELS)
    backbone = build_resnet34_backbone(model_config.width)
    if model_config.initial_weights:
        load_backbone_weights(backbone, Path(model_config.initial_weights))
    if model_config.imagenet_weights:
        load_imagenet_weights(backbone, Path(model_config.imagenet_weights))
    x = backbone(x)
    for i in range(1, HEAD_LAYERS + 1):
        x = keras.layers.Dropout(model_config.dropout, name=f"head{i}_dropout")(x)
        x = keras.layers.Dense(model_config.dense_units, activation="relu", name=f"head{i}_dense")(x)
    x = keras.layers.Dense(num_classes, name="class_logits")(x)
    outputs = keras.layers.Activation("softmax", dtype=PROBABILITIES_DTYPE, name=PROBABILITIES)(x)
    return keras.Model(inputs, outputs, name="respirenet")


def save_backbone_weights(model: keras.Model, path: str | Path) -> Path:
    """Write the backbone of a RespireNet model (or a bare backbone) as a ``.weights.h5`` file.

    The file is what ``[model] initial_weights`` reads, so one run (or a converted ImageNet
    checkpoint built with :func:`build_resnet34_backbone`) can seed another.
    """
    path = Path(path)
    if not path.name.endswith(WEIGHTS_SUFFIX):
        raise IcbhiError(f"{path}: backbone weights file must end with {WEIGHTS_SUFFIX}")
    _backbone_of(model, path).save_weights(path)
    return path


def _backbone_of(model: keras.Model, source: Path) -> keras.Model:
    if model.name == BACKBONE:
        return model
    try:
        return model.get_layer(BACKBONE)
    except ValueError:
        raise IcbhiError(f"{source}: model {model.name!r} has no {BACKBONE!r} backbone") from None


def _error_detail(err: Exception) -> str:
    """The part of a Keras error worth echoing: the shape mismatch if it names one, else its first line."""
    text = str(err)
    mismatch = SHAPE_MISMATCH.search(text)
    return mismatch.group(0) if mismatch else (text.strip().splitlines() or [type(err).__name__])[0]


def load_backbone_weights(backbone: keras.Model, path: Path) -> None:
    """Copy the weights in ``path`` (``.weights.h5`` backbone or ``.keras`` model) into ``backbone``.

    Keras only warns when a ``.weights.h5`` file lacks some of a model's variables, so every
    variable is first set to NaN and any left non-finite after loading is reported as missing.
    """
    if not path.is_file():
        raise IcbhiError(f"{path}: initial weights file not found")
    does_not_fit = f"{path}: weights do not fit this {BACKBONE} ({backbone.output.shape[-1]} output features)"
    if path.name.endswith(WEIGHTS_SUFFIX):
        for variable in backbone.weights:
            variable.assign(np.full(variable.shape, np.nan, variable.dtype))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one warning per unmatched layer; summarised below
            try:
                backbone.load_weights(path)
            except (ValueError, OSError) as err:
                raise IcbhiError(f"{does_not_fit}: {_error_detail(err)}") from None
        missing = sum(not np.all(np.isfinite(keras.ops.convert_to_numpy(v))) for v in backbone.weights)
        if missing:
            raise IcbhiError(f"{does_not_fit}: {missing} of {len(backbone.weights)} tensors missing or not finite")
        return
    if path.suffix != MODEL_SUFFIX:
        raise IcbhiError(f"{path}: initial weights must be a {WEIGHTS_SUFFIX} or {MODEL_SUFFIX} file")
    try:
        loaded = keras.models.load_model(path, compile=False)
    except (ValueError, OSError) as err:
        raise IcbhiError(f"{path}: cannot read the model ({_error_detail(err)})") from None
    source = _backbone_of(loaded, path)
    weights = source.get_weights()
    if [w.shape for w in weights] != [tuple(v.shape) for v in backbone.weights]:
        raise IcbhiError(f"{does_not_fit}: the file's backbone has {source.output.shape[-1]}")
    backbone.set_weights(weights)
