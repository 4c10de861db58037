"""NumPy/librosa reference implementations of the features, used by the parity tests and the
speed benchmark. They follow the breathing-phase paper's recipe literally; the in-graph
versions in ``tfbreath.maps`` and ``tfbreath.scalars`` must match them.

They live with the tests, not in the package: nothing in ``tfbreath`` uses them. The tests
import them as ``librosa_reference`` (pytest puts ``tests/`` on ``sys.path``);
``benchmarks/feature_speed.py`` adds ``tests/`` to ``sys.path`` itself."""
