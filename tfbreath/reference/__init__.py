"""NumPy/librosa reference implementations of the features, used by the parity tests and the
speed benchmark. They follow the breathing-phase paper's recipe literally; the in-graph
versions in ``tfbreath.maps`` and ``tfbreath.scalars`` must match them."""
