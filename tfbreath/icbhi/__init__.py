"""ICBHI 2017 crackle/wheeze classification of breathing cycles with RespireNet's techniques.

A pipeline TOML with top-level ``task = "icbhi"`` (``pipelines/icbhi_respirenet.toml``) selects
this sub-package; ``python -m tfbreath.fit --pipeline pipelines/icbhi_respirenet.toml --data DIR``
then classifies each annotated cycle of every recording in DIR as normal / crackle / wheeze /
both (or normal / abnormal).

Data side: ``config`` (frozen dataclasses), ``reader`` (the ICBHI folder layout and the
patient-wise splits), ``preprocess`` (band-pass, 4 kHz, [-1, 1], in-graph), ``padding``
(smart padding), ``augment`` (concatenation, noise, speed, shift, class-balanced sampling),
``spectrogram`` (mel + blank-region clipping, in-graph), ``dataset`` (cycles -> tf.data) and
``synthetic`` (a small learnable ICBHI-layout folder for tests and demos).
Model side: ``resnet``, ``score``, ``finetune`` and ``fit``.
"""
