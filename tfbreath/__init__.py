"""tfbreath: in-graph audio features and Keras models for breathing-sound classification."""

from tfbreath.console import quiet_unless_verbose

quiet_unless_verbose()  # before any tfbreath module imports TensorFlow

__version__ = "0.1.0"
