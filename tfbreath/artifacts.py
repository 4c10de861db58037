"""Run outputs written atomically: a crash mid-write never leaves a half file under the real name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable


def _atomically(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    write(partial)
    os.replace(partial, path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return _atomically(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, payload: bytes) -> Path:
    return _atomically(Path(path), lambda tmp: tmp.write_bytes(payload))


def write_json(path: str | Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def save_model(model, path: str | Path) -> Path:
    """``model.save`` to a ``.keras`` file, atomically."""
    return _atomically(Path(path), lambda tmp: model.save(tmp))


def save_figure(figure, path: str | Path) -> Path:
    return _atomically(Path(path), lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight"))


def write_folder(path: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(folder)`` into a staging folder, then swap it in for ``path`` (replacing an old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(partial, path)
    return path
