"""Run outputs written atomically: a crash mid-write never leaves a half file under the real name.

``check_writable`` refuses, before any work, an output path that cannot be written. A ``.keras``
file can carry the pipeline TOML its model was trained with (``save_model(..., pipeline_toml)``,
read back by ``model_pipeline_toml``). ``format_csv`` makes a table's text for ``write_text``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

from tfbreath.errors import TfbreathError

MODEL_PIPELINE_ENTRY = "tfbreath/pipeline.toml"
"""Where a ``.keras`` archive keeps its pipeline TOML (Keras' loader ignores entries it does not know)."""


class OutputPathError(TfbreathError, ValueError):
    """An output path that cannot be written: ``<path>: <problem>``."""


def _staging_path(path: Path, kind: str = "partial") -> Path:
    """A hidden name beside ``path``, of its own per call: processes writing one output at once (a
    search's chief and workers all record its pipeline) must not rename each other's away. Not
    mkstemp: the output keeps the staged file's mode, and mkstemp's is private to the owner."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex}.{kind}{path.suffix}")


def _atomically(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _staging_path(path)
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return _atomically(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def format_csv(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A header line of ``columns``, then one line per row, ``\\n``-terminated (the csv module's quoting)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def write_bytes(path: str | Path, payload: bytes) -> Path:
    return _atomically(Path(path), lambda tmp: tmp.write_bytes(payload))


def write_json(path: str | Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def save_model(model, path: str | Path, pipeline_toml: str | None = None) -> Path:
    """``model.save`` to a ``.keras`` file, atomically; with ``pipeline_toml`` (``dump_config``'s
    text), the archive also holds the pipeline the model was trained with."""

    def write(tmp: Path) -> None:
        model.save(tmp)
        if pipeline_toml is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(MODEL_PIPELINE_ENTRY, pipeline_toml)

    return _atomically(Path(path), write)


def model_pipeline_toml(path: str | Path) -> str | None:
    """The pipeline TOML a ``.keras`` file carries (see ``save_model``), ``None`` if it has none.

    Raises ``zipfile.BadZipFile`` or ``OSError`` for a file that is not a readable zip archive.
    """
    with zipfile.ZipFile(path) as archive:
        if MODEL_PIPELINE_ENTRY not in archive.namelist():
            return None
        return archive.read(MODEL_PIPELINE_ENTRY).decode("utf-8")


def save_figure(figure, path: str | Path) -> Path:
    """Write a matplotlib ``figure`` to ``path`` atomically, then close it (written or not), so a
    tool drawing many figures does not keep them all open."""
    import matplotlib.pyplot as plt  # only where figures are drawn: the callers chose the backend

    try:
        return _atomically(Path(path), lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight"))
    finally:
        plt.close(figure)


def nearest_existing(path: str | Path) -> Path:
    """``path`` if it exists, else its nearest existing parent (``.`` for a relative one)."""
    path = Path(path)
    return next(p for p in (path, *path.parents) if p.exists())


def check_writable(path: str | Path, folder: bool = False) -> Path:
    """Refuse, before any work, an output that cannot be written: a folder where a file goes (or
    a file where a ``folder`` goes), a file on the way, or a place this process cannot write in.

    The nearest existing folder gets a probe file (created and removed at once): permission bits
    do not tell, for root or on a read-only file system.

    Raises
    ------
    OutputPathError
        ``<path>: <problem>``.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputPathError(f"{path}: is a file, not a folder")
    if not folder and path.is_dir():
        raise OutputPathError(f"{path}: is a folder; name a file")
    existing = nearest_existing(path)
    if existing != path and not existing.is_dir():
        raise OutputPathError(f"{path}: cannot be created, {existing} is a file")
    probe_folder = existing if existing.is_dir() else existing.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe_folder, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise OutputPathError(f"{path}: cannot write in {probe_folder} ({err.strerror})") from None
    return path


def write_folder(path: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(folder)`` into a staging folder, then swap it in for ``path``.

    An old folder is renamed aside first and deleted only once the new one is in place, so a
    failure (or a kill) leaves the old or the new folder at ``path``, never a half-deleted one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _staging_path(path)
    old = _staging_path(path, "old")
    try:
        write(partial)
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(partial, path)
        except OSError:
            if old.exists():
                os.replace(old, path)
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path
