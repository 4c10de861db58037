"""torchvision ResNet-34 ``.pth`` -> Keras backbone, without torch or network access.

The state dict is random, with the names and shapes of torchvision's ``resnet34`` written out
here from its architecture (BasicBlock, layers [3, 4, 6, 3], a 1x1 conv + BN downsample in the
first block of layers 2-4). It is saved the way ``torch.save`` saves: a zip archive whose
``data.pkl`` is pickled (protocol 2) with the same global references and persistent storage ids
as torch's pickler, the storages as raw little-endian records. The converted backbone is checked
against an independent NumPy ResNet-34 in torch's NCHW layout and padding.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import sys
import types
import zipfile

import keras
import numpy as np
import pytest

from tfbreath.icbhi.config import ModelConfig
from tfbreath.icbhi.reader import IcbhiError
from tfbreath.icbhi.resnet import BACKBONE, build_resnet34_backbone, build_respirenet
from tfbreath.icbhi.torchvision_weights import convert_resnet34, read_state_dict

LAYERS = (3, 4, 6, 3)
"""torchvision ``resnet34``: BasicBlocks per layer."""
PLANES = (64, 128, 256, 512)
IMAGENET_CLASSES = 1000
TORCHVISION_RESNET34_PARAMETERS = 21_797_672
"""``sum(p.numel() for p in torchvision.models.resnet34().parameters())``."""
ARCHIVE_FOLDER = "resnet34-b627a593"
"""torch names the archive's top folder after the file (newer versions: ``archive``)."""
TORCH_STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                  np.dtype(np.int64): "LongStorage"}
BN_EPSILON = 1e-5
"""``torch.nn.BatchNorm2d``'s default."""
INPUT_SHAPE = (2, 45, 62, 3)
"""Odd and even sizes, so every stride-2 layer sees both (torchvision's padding is symmetric)."""
TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- torchvision layout

def _batch_norm(name: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes = {f"{name}.{tensor}": (channels,) for tensor in ("weight", "bias", "running_mean", "running_var")}
    return shapes | {f"{name}.num_batches_tracked": ()}


def torchvision_resnet34_shapes() -> dict[str, tuple[int, ...]]:
    """``resnet34().state_dict()``'s names and shapes, in its order."""
    shapes = {"conv1.weight": (64, 3, 7, 7), **_batch_norm("bn1", 64)}
    inplanes = 64
    for layer, (planes, blocks) in enumerate(zip(PLANES, LAYERS), start=1):
        for block in range(blocks):
            prefix, stride = f"layer{layer}.{block}", 2 if layer > 1 and block == 0 else 1
            shapes[f"{prefix}.conv1.weight"] = (planes, inplanes, 3, 3)
            shapes |= _batch_norm(f"{prefix}.bn1", planes)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            shapes |= _batch_norm(f"{prefix}.bn2", planes)
            if stride != 1 or inplanes != planes:
                shapes[f"{prefix}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                shapes |= _batch_norm(f"{prefix}.downsample.1", planes)
            inplanes = planes
    shapes["fc.weight"], shapes["fc.bias"] = (IMAGENET_CLASSES, 512), (IMAGENET_CLASSES,)
    return shapes


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with torchvision's names and shapes, scaled to keep activations near 1."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in torchvision_resnet34_shapes().items():
        if name.endswith("num_batches_tracked"):
            state[name] = np.array(rng.integers(1, 10_000), np.int64)
        elif len(shape) == 4:  # conv: He-normal over the fan-in
            state[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif name.endswith("weight") and not name.startswith("fc"):  # BN gamma
            state[name] = rng.uniform(0.5, 1.0, shape).astype(np.float32)
        else:
            state[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return state


def test_shape_table_has_torchvision_parameter_count():
    shapes = torchvision_resnet34_shapes()
    parameters = sum(int(np.prod(s)) for n, s in shapes.items() if n.endswith(("weight", "bias")))
    assert parameters == TORCHVISION_RESNET34_PARAMETERS
    assert sum(n.endswith(("conv1.weight", "conv2.weight")) for n in shapes) == 1 + 2 * sum(LAYERS)


# ----------------------------------------------------------------------------- torch.save writer

@dataclasses.dataclass(eq=False)
class TorchStorage:
    """A storage as torch pickles it: a persistent id, its elements in the record ``data/<key>``."""

    elements: np.ndarray
    """1-D."""
    key: str
    type_name: str = ""
    """torch's storage class; "" = the one of ``elements.dtype``."""


@dataclasses.dataclass
class TorchTensor:
    """A tensor as torch pickles it: a view (offset, size, stride in elements) of a storage."""

    storage: TorchStorage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _contiguous(array: np.ndarray, key: str) -> TorchTensor:
    array = np.array(array, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    stride = tuple(s // array.itemsize for s in array.strides)
    return TorchTensor(TorchStorage(array.ravel(), key), 0, array.shape, stride)


def _fake_torch() -> tuple[types.ModuleType, types.ModuleType]:
    """Modules ``torch`` and ``torch._utils`` holding stand-ins for what torch's pickles reference."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    torch._utils = utils
    for name in (*TORCH_STORAGES.values(), "BFloat16Storage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("stand-in: only pickled by reference")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    return torch, utils


class _TorchPickler(pickle.Pickler):
    """torch.save's pickler: a tensor reduces to ``_rebuild_tensor_v2``, a storage to a persistent id."""

    def __init__(self, file, torch: types.ModuleType):
        super().__init__(file, protocol=2)  # torch's DEFAULT_PROTOCOL
        self._torch = torch

    def reducer_override(self, obj):
        if isinstance(obj, TorchTensor):
            args = (obj.storage, obj.offset, obj.size, obj.stride, False, collections.OrderedDict())
            return self._torch._utils._rebuild_tensor_v2, args
        return NotImplemented

    def persistent_id(self, obj):
        if not isinstance(obj, TorchStorage):
            return None
        storage_type = getattr(self._torch, obj.type_name or TORCH_STORAGES[obj.elements.dtype])
        return "storage", storage_type, obj.key, "cpu", obj.elements.size


def write_torch_zip(path, state: dict, folder: str = ARCHIVE_FOLDER) -> None:
    """Save ``state`` ({name: array or TorchTensor}) as ``torch.save`` does: zip, pickle protocol 2."""
    tensors = {name: value if isinstance(value, TorchTensor) else _contiguous(value, str(i))
               for i, (name, value) in enumerate(state.items())}
    state_dict = collections.OrderedDict(tensors)
    state_dict._metadata = collections.OrderedDict([("", {"version": 1})])  # as nn.Module.state_dict()
    buffer = io.BytesIO()
    torch, utils = _fake_torch()
    with pytest.MonkeyPatch.context() as patch:  # the pickler checks globals resolve to themselves
        patch.setitem(sys.modules, "torch", torch)
        patch.setitem(sys.modules, "torch._utils", utils)
        _TorchPickler(buffer, torch).dump(state_dict)
    storages = {id(t.storage): t.storage for t in tensors.values()}.values()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{folder}/data.pkl", buffer.getvalue())
        archive.writestr(f"{folder}/byteorder", "little")
        for storage in storages:
            little_endian = storage.elements.dtype.newbyteorder("<")
            archive.writestr(f"{folder}/data/{storage.key}", storage.elements.astype(little_endian).tobytes())
        archive.writestr(f"{folder}/version", "3\n")


# ----------------------------------------------------------------------------- NumPy ResNet-34 (NCHW)

def _conv(x: np.ndarray, weight: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """``torch.nn.functional.conv2d`` without bias. ``[N, C, H, W], [O, C, kh, kw] -> [N, O, H', W']``"""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    _, _, kh, kw = weight.shape
    out_h, out_w = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            window = x[:, :, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, i, j])
    return out


def _bn(x: np.ndarray, state: dict, name: str) -> np.ndarray:
    """``BatchNorm2d`` in eval mode. ``[N, C, H, W] -> same``"""
    scale = state[f"{name}.weight"] / np.sqrt(state[f"{name}.running_var"].astype(np.float64) + BN_EPSILON)
    shift = state[f"{name}.bias"] - state[f"{name}.running_mean"] * scale
    return x * scale[:, None, None] + shift[:, None, None]


def _max_pool(x: np.ndarray, size: int = 3, stride: int = 2, padding: int = 1) -> np.ndarray:
    """``MaxPool2d(3, 2, 1)``: padding counts as -inf. ``[N, C, H, W] -> [N, C, H', W']``"""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    out_h, out_w = (x.shape[2] - size) // stride + 1, (x.shape[3] - size) // stride + 1
    windows = [x[:, :, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
               for i in range(size) for j in range(size)]
    return np.max(windows, axis=0)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def numpy_resnet34_features(state: dict, images: np.ndarray) -> np.ndarray:
    """torchvision ``resnet34`` up to ``avgpool`` + flatten, in float64. ``[N, 3, H, W] -> [N, 512]``"""
    x = _relu(_bn(_conv(images, state["conv1.weight"], 2, 3), state, "bn1"))
    x = _max_pool(x)
    for layer, blocks in enumerate(LAYERS, start=1):
        for block in range(blocks):
            prefix, stride = f"layer{layer}.{block}", 2 if layer > 1 and block == 0 else 1
            identity = x
            if f"{prefix}.downsample.0.weight" in state:
                identity = _bn(_conv(x, state[f"{prefix}.downsample.0.weight"], stride, 0), state,
                               f"{prefix}.downsample.1")
            y = _relu(_bn(_conv(x, state[f"{prefix}.conv1.weight"], stride, 1), state, f"{prefix}.bn1"))
            y = _bn(_conv(y, state[f"{prefix}.conv2.weight"], 1, 1), state, f"{prefix}.bn2")
            x = _relu(y + identity)
    return x.mean(axis=(2, 3))


# ----------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return random_state_dict()


@pytest.fixture(scope="module")
def pth_file(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("torchvision") / "resnet34-b627a593.pth"
    write_torch_zip(path, state)
    return path


@pytest.fixture(scope="module")
def backbone() -> keras.Model:
    return build_resnet34_backbone(1.0)


def test_pth_round_trip_keeps_names_values_and_dtypes(state, pth_file):
    loaded = read_state_dict(pth_file)
    assert list(loaded) == list(state)
    for name, array in state.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)


def test_converted_backbone_matches_numpy_resnet34(state, pth_file, backbone):
    convert_resnet34(read_state_dict(pth_file), backbone, pth_file)
    images = np.random.default_rng(1).standard_normal(INPUT_SHAPE).astype(np.float32)  # NHWC
    features = np.asarray(backbone(images, training=False))
    expected = numpy_resnet34_features(state, images.transpose(0, 3, 1, 2).astype(np.float64))
    assert features.shape == (INPUT_SHAPE[0], 512)
    assert np.abs(expected).max() > 0.1  # the comparison is not between near-zeros
    np.testing.assert_allclose(features, expected, rtol=TOLERANCE, atol=TOLERANCE * np.abs(expected).max())


def test_stem_against_numpy_without_padding_slack(state, backbone):
    """Layer by layer the first conv agrees too: an off-by-one pad would shift every output."""
    convert_resnet34(state, backbone)
    images = np.random.default_rng(2).standard_normal((1, 9, 12, 3)).astype(np.float32)
    stem = keras.Model(backbone.input, backbone.get_layer("stem_conv").output)
    expected = _conv(images.transpose(0, 3, 1, 2).astype(np.float64), state["conv1.weight"], 2, 3)
    np.testing.assert_allclose(np.asarray(stem(images)), expected.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_fc_head_is_ignored(state, backbone):
    other_head = dict(state, **{"fc.weight": np.zeros((4, 512), np.float32),
                                "fc.bias": np.zeros(4, np.float32)})
    convert_resnet34(other_head, backbone)
    without = {name: value for name, value in state.items() if not name.startswith("fc.")}
    convert_resnet34(without, backbone)
    np.testing.assert_array_equal(np.asarray(backbone.get_layer("stem_conv").kernel),
                                  state["conv1.weight"].transpose(2, 3, 1, 0))


def test_build_respirenet_loads_imagenet_weights(state, pth_file):
    config = ModelConfig(dense_units=8, imagenet_weights=str(pth_file))
    model = build_respirenet((32, 40, 1), 4, config)
    layer = model.get_layer(BACKBONE).get_layer("stage2_block1_proj_bn")
    np.testing.assert_array_equal(np.asarray(layer.moving_variance),
                                  state["layer2.0.downsample.1.running_var"])


def test_missing_tensor_is_named(state, backbone):
    broken = {name: value for name, value in state.items() if name != "layer3.2.bn1.running_var"}
    with pytest.raises(IcbhiError, match=r"^w\.pth: not a torchvision ResNet-34 state dict: 1 of 180 "
                                         r"tensors missing \(layer3\.2\.bn1\.running_var\)$"):
        convert_resnet34(broken, backbone, "w.pth")


def test_unexpected_tensor_is_named(state, backbone):
    with pytest.raises(IcbhiError, match=r"unexpected tensors \(layer5\.0\.conv1\.weight\)"):
        convert_resnet34(dict(state, **{"layer5.0.conv1.weight": np.zeros((8, 8, 3, 3))}), backbone, "w.pth")


def test_wrong_shape_is_named_and_leaves_the_backbone_untouched(state):
    backbone = build_resnet34_backbone(1.0)
    before = backbone.get_weights()
    broken = dict(state, **{"layer1.0.conv1.weight": np.zeros((64, 32, 3, 3), np.float32)})
    with pytest.raises(IcbhiError, match=r"^w\.pth: layer1\.0\.conv1\.weight: expected \(64, 64, 3, 3\), "
                                         r"got \(64, 32, 3, 3\)$"):
        convert_resnet34(broken, backbone, "w.pth")
    for a, b in zip(backbone.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_width_other_than_one_is_a_clear_error(state):
    with pytest.raises(IcbhiError, match=r"need \[model\] width = 1\.0; this backbone has 256 "
                                         r"output features"):
        convert_resnet34(state, build_resnet34_backbone(0.5), "w.pth")


def test_strided_half_and_shared_storages(tmp_path):
    """Views as torch saves them: a transposed tensor, two tensors sharing one storage, fp16, int64."""
    elements = np.arange(12, dtype=np.float32)
    shared = TorchStorage(elements, "0")
    half = np.linspace(-1, 1, 6).astype(np.float16).reshape(2, 3)
    state = {"transposed": TorchTensor(shared, 0, (4, 3), (1, 4)),  # a [3, 4] tensor's .t()
             "tail": TorchTensor(shared, 8, (2, 2), (2, 1)),
             "half": half, "steps": np.array(7, np.int64)}
    write_torch_zip(tmp_path / "v.pth", state, folder="archive")
    loaded = read_state_dict(tmp_path / "v.pth")
    np.testing.assert_array_equal(loaded["transposed"], elements.reshape(3, 4).T)
    np.testing.assert_array_equal(loaded["tail"], elements[8:].reshape(2, 2))
    assert loaded["half"].dtype == np.float16 and loaded["steps"].dtype == np.int64
    np.testing.assert_array_equal(loaded["half"], half)
    assert loaded["steps"].shape == () and int(loaded["steps"]) == 7


def test_npz_with_the_same_names_is_read(tmp_path):
    np.savez(tmp_path / "w.npz", **{"conv1.weight": np.ones((64, 3, 7, 7), np.float32)})
    assert read_state_dict(tmp_path / "w.npz")["conv1.weight"].shape == (64, 3, 7, 7)


def _write_pickle_only(path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)


def test_file_errors(tmp_path):
    with pytest.raises(IcbhiError, match=r"nope\.pth: torchvision weights file not found"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(IcbhiError, match=r"text\.pth: not a torch\.save zip archive"):
        read_state_dict(tmp_path / "text.pth")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(IcbhiError, match=r"other\.zip: a zip archive with 0 data\.pkl records"):
        read_state_dict(tmp_path / "other.zip")
    _write_pickle_only(tmp_path / "list.pth", pickle.dumps([1, 2], protocol=2))
    with pytest.raises(IcbhiError, match=r"list\.pth: holds a list, not a state dict of named tensors"):
        read_state_dict(tmp_path / "list.pth")
    _write_pickle_only(tmp_path / "cut.pth", pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(IcbhiError, match=r"cut\.pth: cannot unpickle archive/data\.pkl"):
        read_state_dict(tmp_path / "cut.pth")


def test_pickled_code_is_refused_not_run(tmp_path):
    calls = b"cbuiltins\nexec\n(Vraise SystemExit('ran')\ntR."  # protocol 0: exec(...) when loaded
    _write_pickle_only(tmp_path / "evil.pth", calls)
    with pytest.raises(IcbhiError, match=r"evil\.pth: refusing to unpickle builtins\.exec"):
        read_state_dict(tmp_path / "evil.pth")


def test_unsupported_storage_type_and_missing_storage(tmp_path):
    bf16 = TorchTensor(TorchStorage(np.zeros(4, np.float16), "0", "BFloat16Storage"), 0, (4,), (1,))
    write_torch_zip(tmp_path / "bf16.pth", {"w": bf16})
    with pytest.raises(IcbhiError, match=r"bf16\.pth: unsupported storage type torch\.BFloat16Storage"):
        read_state_dict(tmp_path / "bf16.pth")
    overrun = TorchTensor(TorchStorage(np.zeros(4, np.float32), "0"), 2, (3,), (1,))
    write_torch_zip(tmp_path / "overrun.pth", {"w": overrun})
    with pytest.raises(IcbhiError, match=r"overrun\.pth: tensor of size \(3,\), stride \(1,\), offset 2 "
                                         r"overruns its storage of 4 elements"):
        read_state_dict(tmp_path / "overrun.pth")
