"""The pretrained model that ships with tfbreath, found with ``importlib.resources``.

``breath_phase/`` is the inhale/exhale model that ``python -m tfbreath.predict`` uses without
``--model``. In the repository it is a symbolic link to the top-level ``saved_models/breath_phase/``,
the model's one copy in git; building the package (``pip install .``, ``pip wheel .``) copies the
files ``setup.cfg`` lists under ``[options.package_data]`` through the link into
``tfbreath/pretrained/breath_phase/``. So the same lookup finds the model in an installed package
from any folder, and in an editable install or a source checkout (through the link).

What installs (``SHIPPED_FILES``) is what running and describing the model need: the TFLite
files predict prefers, the Keras ensemble (predict's fallback, and what ``export`` converts), the
pipeline it was trained with (its sample rate and features), its metrics and its model card. The
members' own ``.keras`` files (the ensemble holds them all), the training history, the out-of-fold
predictions and the plots stay in the repository's ``saved_models/breath_phase/``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

BREATH_PHASE = "breath_phase"
"""The inhale/exhale model (trained with ``pipelines/breath_phase_cpu.toml``)."""

SHIPPED_FILES = ("ensemble.tflite", "ensemble_float16.tflite", "ensemble.keras", "pipeline.toml",
                 "metrics.json", "README.md")
"""The files of ``saved_models/breath_phase/`` installed with the package; ``setup.cfg``'s
``[options.package_data]`` names the same (``tests/test_pretrained.py`` checks both)."""


def model_dir(name: str = BREATH_PHASE) -> Path:
    """The folder of the shipped model ``name``, inside the installed package.

    A package installed as files (as pip installs a wheel) gives a ``pathlib.Path``: the TFLite
    interpreter and Keras read the model from the file system.
    """
    return Path(str(importlib.resources.files(__name__) / name))
