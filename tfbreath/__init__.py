"""tfbreath: in-graph audio features and Keras models for breathing-sound classification."""

__version__ = "0.1.0"
