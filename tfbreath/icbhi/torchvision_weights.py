"""torchvision ResNet-34 weights (the ``.pth`` state dict users download) into the Keras backbone.

    backbone = build_resnet34_backbone(1.0)
    load_imagenet_weights(backbone, Path("resnet34-b627a593.pth"))   # [model] imagenet_weights

RespireNet starts from torchvision's ImageNet ResNet-34; this module reads that file without
PyTorch. ``torch.save`` (torch >= 1.6) writes a zip archive: ``<name>/data.pkl`` pickles the
state dict (an ``OrderedDict`` of tensors), each tensor a call to
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``
whose storage is the persistent id ``('storage', torch.FloatStorage, key, location, numel)``;
``<name>/data/<key>`` holds that storage's raw bytes (little-endian unless ``<name>/byteorder``
says ``big``). :func:`read_state_dict` rebuilds the tensors as NumPy arrays with an unpickler that
resolves only those few names, so a file cannot run code. A ``.npz`` with the same names is read
too, for weights exported some other way.

:func:`convert_resnet34` copies torchvision's tensors into the layers of
:func:`tfbreath.icbhi.resnet.build_resnet34_backbone`, whose padding and BatchNorm epsilon
(1e-5) follow torchvision, so activations match: conv kernels go from torch's ``[O, I, kh, kw]``
to Keras' ``[kh, kw, I, O]``; BatchNorm's weight / bias / running mean / running variance become
gamma / beta / moving mean / moving variance. The 1000-way ``fc`` head (RespireNet replaces it)
and BatchNorm's ``num_batches_tracked`` counters are skipped.
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfbreath.icbhi.reader import IcbhiError

STATE_DICT_RECORD = "data.pkl"
"""The pickled state dict inside a ``torch.save`` zip, under the archive's one top folder."""
STORAGE_FOLDER = "data"
"""Folder (next to ``data.pkl``) holding one raw-bytes record per storage key."""
BYTEORDER_RECORD = "byteorder"
"""Optional record (``little`` / ``big``) naming the storages' byte order; absent = little."""
NPZ_SUFFIX = ".npz"
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
"""torch storage classes a state dict may name, by the NumPy dtype of their elements."""
PERSISTENT_ID_FIELDS = 5
"""``('storage', storage_type, key, location, numel)``."""
LISTED_NAMES = 5
"""How many missing / unexpected names an error message lists."""

TORCHVISION_FEATURES = 512
"""Channels of torchvision ResNet-34's last stage: the backbone must be built with width 1.0."""
CONV_TENSORS = ("weight",)
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
"""In the order of Keras' BatchNormalization weights: gamma, beta, moving mean, moving variance."""
TORCH_TO_KERAS_KERNEL = (2, 3, 1, 0)
"""``[O, I, kh, kw] -> [kh, kw, I, O]``."""
SKIPPED_TENSORS = re.compile(r"^fc\.|\.num_batches_tracked$")
"""The ImageNet classifier (RespireNet has its own head) and BatchNorm's step counters."""
STEM_MODULES = {"stem_conv": "conv1", "stem_bn": "bn1"}
BLOCK_LAYER = re.compile(r"stage(?P<stage>\d+)_block(?P<block>\d+)_"
                         r"(?P<part>conv1|conv2|bn1|bn2|proj|proj_bn)")
"""The backbone's block layer names (``resnet._basic_block``); blocks count from 1 there, from 0 in torch."""
BLOCK_PARTS = {"conv1": "conv1", "conv2": "conv2", "bn1": "bn1", "bn2": "bn2",
               "proj": "downsample.0", "proj_bn": "downsample.1"}


class _StorageType:
    """What the unpickler returns for ``torch.<Name>Storage``: the element dtype of that storage."""

    def __init__(self, name: str):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a ``torch.save`` state dict, resolving only the globals such a file needs.

    ``load_storage(key, dtype, numel)`` returns the storage record ``key`` as a 1-D array.
    """

    def __init__(self, file, load_storage, source: Path):
        super().__init__(file)
        self._load_storage = load_storage
        self._source = source
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name.endswith("Storage"):
            raise IcbhiError(f"{self._source}: unsupported storage type torch.{name} "
                             f"(supported: {', '.join(STORAGE_DTYPES)})")
        raise IcbhiError(f"{self._source}: refusing to unpickle {module}.{name}: "
                         "a state dict holds only tensors")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == PERSISTENT_ID_FIELDS and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise IcbhiError(f"{self._source}: not a torch storage reference: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:  # tensors viewing one storage share it
            self._storages[key] = self._load_storage(str(key), storage_type.dtype, int(numel))
        return self._storages[key]

    def _rebuild_tensor(self, storage: np.ndarray, offset: int, size: tuple[int, ...],
                        stride: tuple[int, ...], *_requires_grad_hooks_metadata) -> np.ndarray:
        """``torch._utils._rebuild_tensor_v2``: the strided view of ``storage``, copied. ``-> size``"""
        size, stride = tuple(size), tuple(stride)
        if min(size, default=1) == 0:
            return np.zeros(size, storage.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if len(size) != len(stride) or offset < 0 or min(stride, default=0) < 0 or last >= storage.size:
            raise IcbhiError(f"{self._source}: tensor of size {size}, stride {stride}, offset {offset} "
                             f"overruns its storage of {storage.size} elements")
        view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * storage.itemsize for s in stride],
                                               writeable=False)
        return view.astype(storage.dtype.newbyteorder("="))


def _rebuild_parameter(data: np.ndarray, _requires_grad: bool, _hooks: Any) -> np.ndarray:
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is its tensor here."""
    return data


def _read_torch_zip(path: Path) -> Any:
    """The object ``torch.save`` pickled into the zip archive ``path``, tensors as NumPy arrays."""
    if not zipfile.is_zipfile(path):
        raise IcbhiError(f"{path}: not a torch.save zip archive (the format of torch >= 1.6, e.g. "
                         f"torchvision's resnet34-b627a593.pth) or a {NPZ_SUFFIX} file")
    try:
        with zipfile.ZipFile(path) as archive:
            return _unpickle_archive(archive, path)
    except zipfile.BadZipFile as err:
        raise IcbhiError(f"{path}: damaged zip archive ({err})") from None


def _unpickle_archive(archive: zipfile.ZipFile, path: Path) -> Any:
    """The object pickled in ``archive``'s ``data.pkl``, its storages read from the same archive."""
    records = [n for n in archive.namelist() if n.rpartition("/")[2] == STATE_DICT_RECORD]
    if len(records) != 1:
        raise IcbhiError(f"{path}: a zip archive with {len(records)} {STATE_DICT_RECORD} records, "
                         "not a torch.save file (which has 1)")
    prefix = records[0][: -len(STATE_DICT_RECORD)]
    byteorder = ">" if _read_text(archive, f"{prefix}{BYTEORDER_RECORD}") == "big" else "<"

    def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{prefix}{STORAGE_FOLDER}/{key}"
        try:
            raw = archive.read(name)
        except KeyError:
            raise IcbhiError(f"{path}: storage record {name} is missing") from None
        if len(raw) != numel * dtype.itemsize:
            raise IcbhiError(f"{path}: storage record {name} has {len(raw)} bytes, "
                             f"expected {numel} x {dtype.itemsize}")
        return np.frombuffer(raw, dtype.newbyteorder(byteorder))

    with archive.open(records[0]) as file:
        try:
            return _StateDictUnpickler(file, load_storage, path).load()
        except IcbhiError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise IcbhiError(f"{path}: cannot unpickle {records[0]}: {err}") from None


def _read_text(archive: zipfile.ZipFile, name: str) -> str:
    """A small text record of ``archive``, stripped; "" if absent."""
    return archive.read(name).decode("ascii", "replace").strip() if name in archive.namelist() else ""


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch state dict saved with ``torch.save`` (or a ``.npz``) as ``{name: array}``, without torch.

    Raises :class:`IcbhiError` naming the file when it is missing, not a torch zip archive, needs a
    global other than the few a state dict uses, or does not hold a mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise IcbhiError(f"{path}: torchvision weights file not found")
    if path.suffix == NPZ_SUFFIX:
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files}
        except (ValueError, OSError, zipfile.BadZipFile) as err:
            raise IcbhiError(f"{path}: cannot read the {NPZ_SUFFIX} file ({err})") from None
    state = _read_torch_zip(path)
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, np.ndarray)
                                            for k, v in state.items())):
        raise IcbhiError(f"{path}: holds a {type(state).__name__}, not a state dict of named tensors")
    return dict(state)


def torchvision_module(layer_name: str) -> str:
    """torchvision's module name for a conv / BatchNorm layer of the backbone (``stem_conv`` -> ``conv1``)."""
    if layer_name in STEM_MODULES:
        return STEM_MODULES[layer_name]
    match = BLOCK_LAYER.fullmatch(layer_name)
    if match is None:
        raise ValueError(f"backbone layer {layer_name!r} has no torchvision ResNet counterpart")
    return f"layer{match['stage']}.{int(match['block']) - 1}.{BLOCK_PARTS[match['part']]}"


def _listed(names: list[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > LISTED_NAMES else ""
    return ", ".join(names[:LISTED_NAMES]) + more


def convert_resnet34(state_dict: dict[str, np.ndarray], backbone: keras.Model,
                     source: str | Path = "state dict") -> None:
    """Copy a torchvision ResNet-34 state dict into a width-1.0 :func:`build_resnet34_backbone`.

    Every conv and BatchNorm layer of ``backbone`` must find its tensors, of torchvision's shapes,
    and every tensor but ``fc.*`` and ``*.num_batches_tracked`` must find a layer; otherwise one
    :class:`IcbhiError` (naming ``source``) lists the missing or unexpected names or the first
    shape mismatch, and ``backbone`` is left untouched.
    """
    features = backbone.output.shape[-1]
    if features != TORCHVISION_FEATURES:
        raise IcbhiError(f"{source}: torchvision ResNet-34 weights need [model] width = 1.0; this backbone "
                         f"has {features} output features, not {TORCHVISION_FEATURES}")
    expected: dict[str, tuple[int, ...]] = {}
    targets = []  # (layer, its tensors' names in Keras weight order)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel_shape = tuple(layer.kernel.shape)
            shapes = [tuple(kernel_shape[axis] for axis in np.argsort(TORCH_TO_KERAS_KERNEL))]
            suffixes = CONV_TENSORS
        elif isinstance(layer, keras.layers.BatchNormalization):
            shapes = [tuple(w.shape) for w in layer.weights]
            suffixes = BN_TENSORS
        else:
            continue
        names = [f"{torchvision_module(layer.name)}.{suffix}" for suffix in suffixes]
        expected.update(zip(names, shapes))
        targets.append((layer, names))
    not_resnet34 = f"{source}: not a torchvision ResNet-34 state dict"
    missing = [name for name in expected if name not in state_dict]
    if missing:
        raise IcbhiError(f"{not_resnet34}: {len(missing)} of {len(expected)} tensors missing "
                         f"({_listed(missing)})")
    unexpected = [name for name in state_dict if name not in expected and not SKIPPED_TENSORS.search(name)]
    if unexpected:
        raise IcbhiError(f"{not_resnet34}: unexpected tensors ({_listed(unexpected)})")
    mismatched = [name for name, shape in expected.items() if np.shape(state_dict[name]) != shape]
    if mismatched:
        name = mismatched[0]
        others = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        got = np.shape(state_dict[name])
        raise IcbhiError(f"{source}: {name}: expected {expected[name]}, got {got}{others}")
    for layer, names in targets:
        tensors = [np.asarray(state_dict[name], np.float32) for name in names]
        if isinstance(layer, keras.layers.Conv2D):
            tensors = [np.transpose(tensors[0], TORCH_TO_KERAS_KERNEL)]
        layer.set_weights(tensors)


def load_imagenet_weights(backbone: keras.Model, path: str | Path) -> None:
    """Read a torchvision ResNet-34 ``.pth`` (or ``.npz``) and convert it into ``backbone``."""
    convert_resnet34(read_state_dict(path), backbone, Path(path))
