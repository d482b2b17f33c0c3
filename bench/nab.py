"""NAB (Numenta Anomaly Benchmark) scoring, as NAB's own scorer computes it.

The rules, from NAB's sweeper and runner (numenta/NAB, ``nab/sweeper.py``,
``nab/runner.py``, ``config/profiles.json``):

* A series of ``n`` rows has a *probationary period* of its first
  ``min(floor(0.15 n), 0.15 * 5000)`` rows; detections there are ignored, and
  a labelled window whose rows all lie there is not counted.
* Each labelled window ``[t1, t2]`` (timestamps of rows) scores the best of
  its detections: a detection at row ``i`` of a window whose right edge is row
  ``r`` and width ``w = r - left + 1`` rows scores
  ``tpWeight * S(-(r - i + 1) / w) / S(-1)``, with the scaled sigmoid
  ``S(x) = 2 / (1 + exp(5 x)) - 1`` (``-1`` from ``x >= 3``), so the first row
  of a window scores ``tpWeight`` and later rows less.  A window without a
  detection scores ``-fnWeight``.
* Every detection outside a window is a false positive scoring
  ``fpWeight * S(|i - r_prev| / (w_prev - 1))`` relative to the closest
  preceding window (``-fpWeight`` when there is none): a detection just after a
  window costs little, one far from any window ``fpWeight``.
* The standard profile: tpWeight 1.0, fnWeight 1.0, fpWeight 0.11.
* Normalisation over a corpus: ``100 (raw - null) / (perfect - null)``, where
  ``null`` is the raw score of a detector that never fires (``-fnWeight`` per
  counted window) and ``perfect = tpWeight x`` the number of windows.
"""
import json
import math
import pathlib
import typing

import numpy as np
import pandas as pd

STANDARD = {'tpWeight': 1.0, 'fnWeight': 1.0, 'fpWeight': 0.11}
PROBATION_PERCENT = 0.15


def scaled_sigmoid(position: float) -> float:
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_rows(n: int, percent: float = PROBATION_PERCENT) -> float:
    return min(math.floor(percent * n), percent * 5000)


class SeriesScore(typing.NamedTuple):
    raw: float
    windows: int          # windows counted (not wholly probationary)
    tp: int               # windows with a detection
    fp: int               # detections outside every window
    detections: int       # detections scored (after the probationary period)


def score_series(timestamps, detected, windows, profile=STANDARD,
                 percent: float = PROBATION_PERCENT) -> SeriesScore:
    """Raw NAB score of one series.

    ``timestamps``: the series' row times (anything pandas reads as times);
    ``detected``: one bool per row; ``windows``: ``[(start, end), ...]``
    whose ends are row times of the series, in time order.
    """
    times = pd.to_datetime(pd.Series(list(timestamps))).to_numpy()
    detected = np.asarray(detected, dtype=bool)
    if len(detected) != len(times):
        raise ValueError('one detection flag per row is needed')
    n = len(times)
    bounds = []
    for start, end in windows:
        left = _row_of(times, start)
        right = _row_of(times, end)
        bounds.append((left, right))
    probation = probation_rows(n, percent)
    max_tp = scaled_sigmoid(-1.0)
    best = {}            # window -> best weighted score so far
    fp_score = 0.0
    fp = 0
    scored = 0
    current = None
    previous = None       # (right row, width) of the last window left
    w = 0
    for i in range(n):
        if current is None and w < len(bounds) and i == bounds[w][0]:
            current = w
            w += 1
        in_probation = i < probation
        if current is not None and not in_probation:
            best.setdefault(current, -profile['fnWeight'])
        if detected[i] and not in_probation:
            scored += 1
            if current is not None:
                left, right = bounds[current]
                width = float(right - left + 1)
                position = -(right - i + 1) / width
                score = scaled_sigmoid(position) * profile['tpWeight'] / max_tp
                best[current] = max(best[current], score)
            else:
                if previous is None:
                    position = 3.0
                else:
                    right, width = previous
                    position = abs(right - i) / float(width - 1)
                fp_score += scaled_sigmoid(position) * profile['fpWeight']
                fp += 1
        if current is not None and i == bounds[current][1]:
            left, right = bounds[current]
            previous = (right, float(right - left + 1))
            current = None
    raw = fp_score + sum(best.values())
    tp = sum(1 for v in best.values() if v > -profile['fnWeight'])
    return SeriesScore(raw, len(best), tp, fp, scored)


def _row_of(times, stamp) -> int:
    t = pd.Timestamp(stamp).to_datetime64()
    i = int(np.searchsorted(times, t))
    if i >= len(times) or times[i] != t:
        raise ValueError(f'window limit {stamp} is not a row of the series')
    return i


def normalised(raw_total: float, windows: int, profile=STANDARD,
               labelled: typing.Optional[int] = None) -> float:
    """NAB's normalisation: ``null`` is what a detector that never fires
    scores (``-fnWeight`` per counted window), ``perfect`` is ``tpWeight``
    times the windows of the label file (``labelled``, default ``windows``:
    they differ only where a window lies wholly in a probationary period)."""
    null = -profile['fnWeight'] * windows
    perfect = profile['tpWeight'] * (windows if labelled is None
                                     else labelled)
    return 100.0 * (raw_total - null) / (perfect - null)


def load_windows(nab_dir) -> dict:
    """``realKnownCause/<file>.csv`` -> [(start, end), ...]."""
    with open(pathlib.Path(nab_dir) / 'combined_windows.json') as f:
        return json.load(f)
