"""Which frames a tick encodes. It takes up to ``TICK_BATCHES`` encoder batches: cameras sample
in step, so a tick often finds a few frames more than one batch although the encoder keeps up on
average (nine cameras bring nine frames at once to a batch of eight). More than that waiting,
the encoder is behind: each camera keeps an even share, its frames thinned evenly with the newest
kept, so no camera starves another and every segment still spans its time."""

from __future__ import annotations

import numpy as np

# Encoder batches one tick may encode: the second takes a burst's overflow, in the same tick.
TICK_BATCHES = 2


def frames_to_keep(counts: dict[int, int], batch: int, offset: int = 0) -> dict[int, list[int]]:
    """camera -> indices of the frames it keeps, from ``counts`` frames per camera, for an
    encoder of ``batch`` frames a call."""
    shares = fair_shares(counts, TICK_BATCHES * batch, offset)
    return {index: evenly_spaced(count, shares[index]) for index, count in counts.items()}


def fair_shares(counts: dict[int, int], budget: int, offset: int = 0) -> dict[int, int]:
    """How many frames each camera keeps: all if they fit in ``budget``, else an even share each
    (a camera with fewer frames than its share leaves the rest to the others); the share's
    remainder goes to cameras in turn from ``offset``, so no camera is always the one short."""
    if sum(counts.values()) <= budget:
        return dict(counts)
    shares, left, open_ = dict.fromkeys(counts, 0), budget, sorted(counts, key=counts.get)
    while open_ and left > 0:
        share = left // len(open_)
        if share == 0:
            order = sorted(open_)
            start = offset % len(order)
            for index in (order[start:] + order[:start])[:left]:
                shares[index] += 1
            break
        for index in list(open_):
            give = min(share, counts[index] - shares[index])
            shares[index] += give
            left -= give
            if shares[index] == counts[index]:
                open_.remove(index)
    return shares


def evenly_spaced(count: int, keep: int) -> list[int]:
    """``keep`` of ``count`` indices, evenly spread, the last always among them."""
    if keep >= count:
        return list(range(count))
    if keep <= 0:
        return []
    # from the newest back, so that one frame kept is the newest
    return sorted(np.round(np.linspace(count - 1, 0, keep)).astype(int).tolist())
