"""The shipped model is package data: found with ``importlib.resources``, complete, and in the wheel."""

from __future__ import annotations

import configparser
import importlib.resources
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tfbreath
from conftest import REPO
from tfbreath import pretrained
from tfbreath.classifier import DEFAULT_MODEL_DIR, default_model_path, load_classifier
from tfbreath.config import load_config
from tfbreath.tflite_file import verify_tflite

MODEL_IN_REPO = REPO / "saved_models" / pretrained.BREATH_PHASE
IN_WHEEL = f"tfbreath/pretrained/{pretrained.BREATH_PHASE}/"


def test_the_default_model_is_package_data_found_with_importlib_resources():
    folder = importlib.resources.files("tfbreath.pretrained") / pretrained.BREATH_PHASE
    assert DEFAULT_MODEL_DIR == pretrained.model_dir() == Path(str(folder))
    assert DEFAULT_MODEL_DIR.parent == Path(tfbreath.__file__).parent / "pretrained"
    assert default_model_path() == DEFAULT_MODEL_DIR / "ensemble.tflite"


def test_the_default_model_is_complete():
    folder = pretrained.model_dir()
    missing = [name for name in pretrained.SHIPPED_FILES if not (folder / name).is_file()]
    assert not missing, f"{folder} lacks {missing}"
    pipeline = load_config(folder / "pipeline.toml")
    verify_tflite(folder / "ensemble.tflite")
    verify_tflite(folder / "ensemble_float16.tflite")
    classifier = load_classifier(None)  # the TFLite file, run once on silence
    assert (classifier.sample_rate, classifier.num_samples) == (pipeline.audio.sample_rate,
                                                                 pipeline.audio.num_samples)
    probability = classifier(np.zeros((2, classifier.num_samples), np.float32))
    assert probability.shape == (2,) and np.all((probability >= 0) & (probability <= 1))


def test_setup_cfg_ships_exactly_the_shipped_files():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    listed = setup["options.package_data"]["tfbreath.pretrained"].split()
    assert sorted(listed) == sorted(f"{pretrained.BREATH_PHASE}/{name}" for name in pretrained.SHIPPED_FILES)


def _source_tree(destination: Path) -> Path:
    """What a wheel is built from, copied (the link to ``saved_models`` kept a link)."""
    destination.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, destination / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "tfbreath", destination / "tfbreath", symlinks=True, ignore=ignore)
    shutil.copytree(MODEL_IN_REPO, destination / "saved_models" / pretrained.BREATH_PHASE)
    return destination


def test_the_wheel_carries_the_model_and_every_package(tmp_path):
    pytest.importorskip("setuptools", reason="builds the wheel without build isolation (no network)")
    pytest.importorskip("wheel", reason="setuptools < 70.1 builds wheels with the wheel package")
    source = _source_tree(tmp_path / "source")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-cache-dir", "--quiet", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("tfbreath-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
    model = {name[len(IN_WHEEL):]: size for name, size in sizes.items() if name.startswith(IN_WHEEL)}
    assert model == {name: (MODEL_IN_REPO / name).stat().st_size for name in pretrained.SHIPPED_FILES}
    packages = {str(init.parent.relative_to(REPO)) for init in (REPO / "tfbreath").rglob("__init__.py")}
    assert all(f"{package}/__init__.py" in sizes for package in packages), sorted(packages)
