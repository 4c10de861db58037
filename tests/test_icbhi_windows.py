"""Long cycles (``[padding] long_cycles``): windows of the cycle length, and their vote per cycle."""

from __future__ import annotations

import numpy as np

from conftest import sine
from tfbreath.config import with_overrides
from tfbreath.icbhi.config import IcbhiConfig
from tfbreath.icbhi.dataset import TIE_BREAK, CycleSet, build_cycle_set
from tfbreath.icbhi.reader import Cycle, read_database
from tfbreath.icbhi.synthetic import write_recording
from tfbreath.icbhi.trainer import score_test

RATE = 4000
WINDOWED = with_overrides(with_overrides(IcbhiConfig(), "audio", cycle_s=2.0), "padding", long_cycles="windows",
                          window_hop_s=1.5)
"""2-s windows every 1.5 s."""


def _cycles(cycle_ids, labels):
    n = len(cycle_ids)
    return CycleSet(np.zeros((n, 8)), labels, ["Meditron"] * n, [f"r{i}" for i in range(n)], cycle_ids=cycle_ids)


def test_windows_vote_by_majority_and_ties_go_to_the_higher_mean_probability():
    cycles = _cycles([0, 0, 0, 1, 1, 2], [1, 1, 1, 2, 2, 0])
    p = np.array([[0.1, 0.6, 0.3, 0.0],  # cycle 0: windows say 1, 1, 3
                  [0.2, 0.5, 0.3, 0.0],
                  [0.1, 0.2, 0.0, 0.7],
                  [0.6, 0.0, 0.4, 0.0],  # cycle 1: windows say 0 (0.6) and 2 (0.9): a tie, 2 has the higher mean
                  [0.1, 0.0, 0.9, 0.0],
                  [0.7, 0.1, 0.1, 0.1]], np.float32)  # cycle 2: one window keeps its probabilities
    scores, per_cycle = cycles.per_cycle(p)
    assert np.argmax(scores, axis=-1).tolist() == [1, 2, 0]
    np.testing.assert_allclose(scores[0], (np.array([0, 2, 0, 1]) + TIE_BREAK * p[:3].sum(0)) / 3, rtol=1e-6)
    np.testing.assert_allclose(scores[2], (np.array([1, 0, 0, 0]) + TIE_BREAK * p[5]), rtol=1e-6)
    assert per_cycle.labels.tolist() == [1, 2, 0] and per_cycle.recordings.tolist() == ["r0", "r3", "r5"]


def test_rows_of_their_own_cycles_are_scored_as_they_are():
    cycles = _cycles([0, 1, 2], [0, 1, 2])
    p = np.eye(4, dtype=np.float32)[:3]
    scores, per_cycle = cycles.per_cycle(p)
    assert scores is p and per_cycle is cycles


def test_a_long_cycle_becomes_windows_that_cover_it_and_a_short_one_stays_whole(tmp_path):
    signal = sine(300.0, 7.0, RATE)
    write_recording(tmp_path, "105_1b1_Al_sc_Meditron", signal, RATE,
                    (Cycle(0.5, 5.8, True, False), Cycle(5.8, 6.8, False, False)))
    recordings, report = read_database(tmp_path)
    windowed = build_cycle_set(recordings, WINDOWED, True, report, progress=False)
    length = WINDOWED.audio.num_samples
    # the 5.3-s cycle: the fewest windows at most 1.5 s apart that end at its end: at 0, 1.1, 2.2, 3.3 s
    assert windowed.cycle_ids.tolist() == [0, 0, 0, 0, 1]
    assert windowed.labels.tolist() == [1, 1, 1, 1, 0]
    assert (windowed.offsets[:4] == 0).all() and (windowed.lengths[:4] == length).all()
    long_cycle, step = windowed.waveforms[:4], int(1.1 * RATE)
    for earlier, later in zip(long_cycle[:-1], long_cycle[1:]):  # each window starts 1.1 s after the one before
        np.testing.assert_array_equal(later[:length - step], earlier[step:])
    assert 3 * step + length == int(5.3 * RATE)  # so the last ends at the cycle's end: nothing lost
    assert windowed.lengths[4] == RATE  # the short cycle's own second, padded to the window
    cut = build_cycle_set(recordings, with_overrides(WINDOWED, "padding", long_cycles="cut"), True, report,
                          progress=False)
    assert cut.cycle_ids.tolist() == [0, 1]
    np.testing.assert_array_equal(cut.waveforms[0], windowed.waveforms[0])  # "cut" keeps the first window


def test_the_test_split_is_scored_per_cycle_after_the_vote(tmp_path):
    cycles = _cycles([0, 0, 0, 1], [1, 1, 1, 0])
    p = np.array([[0.1, 0.6, 0.3, 0.0],  # cycle 0: windows say 1, 1, 0 -> crackle, right
                  [0.2, 0.5, 0.3, 0.0],
                  [0.9, 0.1, 0.0, 0.0],
                  [0.7, 0.1, 0.1, 0.1]], np.float32)  # cycle 1: normal, right
    results = score_test({"stage1": p}, cycles, 4, tmp_path / "test_predictions.csv")
    assert sum(c["cycles"] for c in results["stage1"]["per_class"].values()) == 2  # cycles, not windows
    assert results["stage1"]["se"] == 1.0 and results["stage1"]["sp"] == 1.0
    rows = (tmp_path / "test_predictions.csv").read_text().splitlines()
    assert rows[1:] == ["r0,Meditron,crackle,crackle", "r3,Meditron,normal,normal"]
