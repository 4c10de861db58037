"""Smart padding (RespireNet, section II-A): every cycle to a fixed length from real audio.

The paper: "For each data sample, smart padding examines the breathing cycle sample for that
patient taken just before and after the current one. If either of the neighbouring cycle is
of the same class or of the normal class, we concatenate the current sample with it. If not,
we pad by copying the same cycle again. We continue this process until we reach our desired
size." Made exact here (``smart_pad``):

1. Neighbours are the cycles of the same recording, in annotation (time) order. A neighbour
   is *eligible* when its label is the cycle's own label or normal (0).
2. Growing outwards, alternately: first the next cycle (i+1) is appended after, then the
   previous one (i-1) is prepended before, then i+2 after, i-2 before, and so on. A side stops
   at its first ineligible cycle (or the recording's edge), so what is joined stays
   contiguous audio; the other side may go on.
3. Once the target length is reached the last-joined neighbour is cut at its outer end, so the
   cycle itself is always whole. If both sides have stopped first, the joined block is followed
   by copies of the cycle itself until the length is reached (the last copy cut short).
4. A cycle already at least ``length`` long keeps its first ``length`` samples (``[padding]
   long_cycles = "cut"``, the rest is not used), or, with ``long_cycles = "windows"``, is cut
   into windows of ``length`` samples at most ``window_hop_s`` apart, the first starting with
   the cycle and the last ending with it, evenly spread (``tfbreath.recording.window_starts``);
   each window is an example of the cycle's class, and at test time the windows vote
   (``tfbreath.icbhi.dataset.CycleSet.per_cycle``).

``smart=False`` skips steps 1-3: the cycle is repeated (RespireNet's public code's padding).
Labels are whatever the task uses (4-class, or 2-class where "same class" is normal/abnormal).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

NORMAL = 0
"""Label of a normal cycle; normal neighbours are always eligible."""


@dataclasses.dataclass(frozen=True)
class Padded:
    """A padded cycle: ``waveform[offset:offset + cycle_length]`` is the cycle's own audio."""

    waveform: np.ndarray
    offset: int
    cycle_length: int
    before: tuple[int, ...] = ()
    """Indices of the neighbours joined before the cycle, nearest first."""
    after: tuple[int, ...] = ()
    """Indices of the neighbours joined after the cycle, nearest first."""


def repeat_to_length(block: np.ndarray, length: int) -> np.ndarray:
    """``block`` followed by copies of itself, cut to ``length`` samples. ``[n] -> [length]``"""
    if len(block) == 0:
        raise ValueError("cannot pad an empty cycle")
    copies = -(-length // len(block))  # ceil
    return np.tile(block, copies)[:length]


def smart_pad(cycles: Sequence[np.ndarray], labels: Sequence[int], index: int, length: int,
              smart: bool = True) -> Padded:
    """Pad ``cycles[index]`` to ``length`` samples with its eligible neighbours (see the module docstring).

    ``cycles`` are one recording's cycles in time order, ``labels`` their task labels.
    """
    own = np.asarray(cycles[index], np.float32)
    if len(own) == 0:
        raise ValueError(f"cycle {index} has no samples")
    if len(own) >= length:
        return Padded(own[:length].copy(), 0, length)
    own_label = labels[index]

    def eligible(j: int) -> bool:
        return 0 <= j < len(cycles) and labels[j] in (own_label, NORMAL) and len(cycles[j]) > 0

    before: list[int] = []
    after: list[int] = []
    growing = {"after": smart, "before": smart}
    total = len(own)
    last_side = None
    while total < length and any(growing.values()):
        for side, joined, step in (("after", after, 1), ("before", before, -1)):
            if total >= length or not growing[side]:
                continue
            j = index + step * (len(joined) + 1)
            if eligible(j):
                joined.append(j)
                total += len(cycles[j])
                last_side = side
            else:
                growing[side] = False

    head = [np.asarray(cycles[j], np.float32) for j in reversed(before)]
    tail = [np.asarray(cycles[j], np.float32) for j in after]
    block = np.concatenate([*head, own, *tail])  # [total]
    offset = sum(len(piece) for piece in head)
    if total >= length:
        if last_side == "before":  # the first piece overshot: keep the end of the block
            cut = total - length
            return Padded(block[cut:].copy(), offset - cut, len(own), tuple(before), tuple(after))
        return Padded(block[:length].copy(), offset, len(own), tuple(before), tuple(after))
    fill = repeat_to_length(own, length - total)
    return Padded(np.concatenate([block, fill]), offset, len(own), tuple(before), tuple(after))
