"""The block path of the video QoE job (bounded replays).

Python Beam pays its per-element cost at every step; here a block of lines
(:class:`~transforms.columnar.LineBlock`) is decoded at once and becomes
*session fragments*: per session id, the block's reports as sorted points
(:class:`~transforms.video.sessions.SessionPoints`).  Canonical CMCD JSON
lines are read a block at a time by :mod:`transforms.video.cmcd_columnar`,
which accepts only lines it reads exactly as the reference decoder does; every
other line goes through the reference decoder
(:func:`transforms.decode.decode_payload`), so each ends as the same report,
dead letter or named filter as on the element path.

Fragments are grouped by session id; the merged points (merging sorted points
is associative) are split where the session gap separates them, which gives
each session and its window ``[first ts, last ts + gap)`` exactly as Beam's
session windows merge them in a bounded run, and the same points are walked
into rollup contributions, pre-aggregated per (dimension, rollup window).
Both travel with their window in the key to ``AggregatePerKey(...,
window_in_key=True)`` (one ON_TIME pane per window, as a bounded run has).
A stream (or a source without blocks) runs the element path.
"""
import collections

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms import deadletter, windows
from transforms.columnar import LineBlock
from transforms.decode import DecodeCounters, Filtered
from transforms.video import cmcd_columnar
from transforms.video.rollups import UNKNOWN, RollupAcc
from transforms.video.sessions import (CDN, CID, ERR, MSD, ST,
                                       STATE, TS, SessionPoints)


class BlockFragmentsFn(beam.DoFn):
    """LineBlock s (or single payloads) -> (session id, SessionPoints) per
    session id and block; dead letters to ``dead``."""

    def __init__(self, decoder, stage, job, source='', max_bytes=1 << 20,
                 json_fast=False):
        # Canonical CMCD JSON lines are read a block at a time, the rest by
        # the reference decoder, one by one (json_fast: the format allows
        # JSON lines).
        self._blocks = cmcd_columnar.BlockDecoder(
            decoder, stage, source, max_bytes, json_fast)
        self._counters = DecodeCounters(job)

    def process(self, element):
        if isinstance(element, LineBlock):
            points, refused, count = self._blocks.decode(element.data)
        else:
            points, refused, count = self._blocks.decode_each([element])
        for result in refused:
            if isinstance(result, Filtered):
                self._counters.filtered(result.name)
            else:
                self._counters.dead()
                yield beam.pvalue.TaggedOutput(deadletter.DEAD, result)
        self._counters.decoded(count)
        by_sid = collections.defaultdict(list)
        for sid, point in points.rows():
            by_sid[sid].append(point)
        for sid, session_points in by_sid.items():
            yield sid, SessionPoints.of(session_points)


def _sessions(points, gap_ms):
    """Sorted points -> lists of points, split where the gap separates."""
    if not points:
        return []
    # (A few points per session id: a plain loop beats numpy's overhead.)
    out, first, last = [], 0, points[0][TS]
    for i, p in enumerate(points):
        if p[TS] - last >= gap_ms:
            out.append(points[first:i])
            first = i
        last = p[TS]
    out.append(points[first:])
    return out


class SessionsAndRollupsFn(beam.DoFn):
    """(session id, fragments) -> sessions ``((sid, start us, end us),
    SessionPoints)`` (main output) and rollup partials ``((dimension key,
    start us, end us), RollupAcc)`` (tag ``rollups``), in the global window.

    The merged points of the session ids of a bundle are buffered and walked
    together (:func:`rollup_partials`, numpy), so the rollup partials leave
    pre-aggregated per (dimension key, rollup window) over the bundle."""
    ROLLUPS = 'rollups'

    def __init__(self, gap_seconds, rollup_window, max_buffer=200_000):
        self._gap_ms = int(round(gap_seconds * 1000))
        self._rollup_window = rollup_window
        self._max_buffer = max_buffer

    def start_bundle(self):
        self._buffer, self._buffered, self._timestamp = [], 0, None

    def process(self, kv, timestamp=beam.DoFn.TimestampParam):
        sid, fragments = kv
        merged = SessionPoints()
        for fragment in fragments:
            merged.merge(fragment)
        gap_us = self._gap_ms * 1000
        for session in _sessions(merged.points, self._gap_ms):
            start = session[0][TS] * 1000
            end = session[-1][TS] * 1000 + gap_us
            yield (sid, start, end), SessionPoints(session)
        self._buffer.append((sid, merged.points))
        self._buffered += len(merged.points)
        self._timestamp = timestamp
        if self._buffered >= self._max_buffer:
            for item in self._flush():
                yield beam.pvalue.TaggedOutput(self.ROLLUPS, item)

    def finish_bundle(self):
        timestamp = self._timestamp
        for item in self._flush():
            yield beam.pvalue.TaggedOutput(self.ROLLUPS, WindowedValue(
                item, timestamp, _GLOBAL))

    def _flush(self):
        buffered, self._buffer, self._buffered = self._buffer, [], 0
        return rollup_partials(buffered, self._gap_ms,
                               self._rollup_window).items()


_GLOBAL = (GlobalWindow(),)
_DIM_NAMES = ('content', 'cdn', 'stream_type')


def _first_per(session, rows):
    """Of ``rows`` (sorted), the first of each session."""
    if rows.size == 0:
        return rows
    _, first = np.unique(session[rows], return_index=True)
    return rows[first]


def rollup_partials(groups, gap_ms, rollup_window) -> dict:
    """[(session id, its sorted points)] -> {(dimension key, window start
    us, window end us): RollupAcc}: the contributions of
    :func:`~transforms.video.rollups.walk_report` and
    :func:`~transforms.video.rollups.close_session` over each session id's
    points (split where the gap separates them), computed on columns."""
    sizes = [len(points) for _, points in groups]
    n = sum(sizes)
    if n == 0:
        return {}
    sids = [sid for sid, _ in groups]
    columns = list(zip(*(p for _, points in groups for p in points)))
    code = np.repeat(np.arange(len(groups)), sizes)
    ts = np.asarray(columns[TS], np.int64)
    state = np.asarray(columns[STATE], dtype=object)
    msd = np.asarray(columns[MSD], np.int64)
    err = np.asarray(columns[ERR], bool)
    # Dimension values (a missing one is 'unknown'), as codes into names.
    dim_codes, dim_names = [], []
    for field in (CID, CDN, ST):
        names, inverse = np.unique(
            np.asarray([v or UNKNOWN for v in columns[field]], dtype=object),
            return_inverse=True)
        dim_codes.append(inverse.reshape(-1))
        dim_names.append(names.tolist())
    # Sessions: a new session id, or the gap since the previous report.
    new = np.ones(n, bool)
    new[1:] = (code[1:] != code[:-1]) | (np.diff(ts) >= gap_ms)
    session = np.cumsum(new) - 1
    m = int(session[-1]) + 1
    is_p, is_f = state == 'p', state == 'f'
    play = np.zeros(n, np.int64)
    play[_first_per(session, np.flatnonzero(is_p))] = 1
    failure = np.zeros(n, np.int64)
    failure[_first_per(session, np.flatnonzero(is_f))] = 1
    start = np.full(n, -1, np.int64)
    first_msd = _first_per(session, np.flatnonzero(msd >= 0))
    start[first_msd] = msd[first_msd]
    # Durations: each state report until the next of its session, if it
    # was r or p, at the time and dimensions of the state's report.
    rows = np.flatnonzero(state != '')
    prev, cur = rows[:-1], rows[1:]
    keep = (session[prev] == session[cur]) & (
        (state[prev] == 'r') | (state[prev] == 'p'))
    prev, cur = prev[keep], cur[keep]
    duration = ts[cur] - ts[prev]
    # Exits: sessions that neither played nor failed, at last report + gap.
    played = np.bincount(session, is_p, m) > 0
    failed = np.bincount(session, is_f, m) > 0
    firsts = np.flatnonzero(new)
    lasts = np.append(firsts[1:] - 1, n - 1)
    exited = np.flatnonzero(~played & ~failed)
    k = prev.size
    # All contributions: reports, durations, exits.
    src = np.concatenate((np.arange(n), prev, firsts[exited]))
    time_ms = np.concatenate((ts, ts[prev], ts[lasts[exited]] + gap_ms))
    kind = np.concatenate((np.zeros(n, np.int8), np.ones(k, np.int8),
                           np.full(exited.size, 2, np.int8)))
    is_report = kind == 0
    zeros_k, zeros_e = np.zeros(k, np.int64), np.zeros(exited.size, np.int64)
    values = {
        'count': is_report.astype(np.int64),
        'plays': np.concatenate((play, zeros_k, zeros_e)),
        'errors': np.concatenate((err.astype(np.int64), zeros_k, zeros_e)),
        'failures': np.concatenate((failure, zeros_k, zeros_e)),
        'rebuffer_ms': np.concatenate((
            np.zeros(n, np.int64), np.where(state[prev] == 'r', duration, 0),
            zeros_e)),
        'playing_ms': np.concatenate((
            np.zeros(n, np.int64), np.where(state[prev] == 'p', duration, 0),
            zeros_e)),
        'exits': (kind == 2).astype(np.int64),
    }
    starts_ms = np.concatenate((start, zeros_k - 1, zeros_e - 1))
    who = code[src]
    win_rows, win_starts = windows.window_starts(rollup_window,
                                                 time_ms * 1000)
    size = int(round(rollup_window.size * 1e6))
    w_codes, w_inverse = np.unique(win_starts, return_inverse=True)
    w_inverse = w_inverse.reshape(-1)
    accs = {}
    for d in range(4):
        if d == 0:
            value_code = np.zeros(win_rows.size, np.int64)
            names, prefix = ['all'], None
        else:
            value_code = dim_codes[d - 1][src][win_rows]
            names, prefix = dim_names[d - 1], _DIM_NAMES[d - 1]
        key = value_code * w_codes.size + w_inverse
        groups_k, group = np.unique(key, return_inverse=True)
        group = group.reshape(-1)
        g = groups_k.size
        sums = {name: np.bincount(group, v[win_rows], g).astype(np.int64)
                for name, v in values.items()}
        order = np.argsort(group, kind='stable')
        bounds = np.searchsorted(group[order], np.arange(g + 1))
        reporting = is_report[win_rows][order]
        has_start = starts_ms[win_rows][order] >= 0
        for i, key_i in enumerate(groups_k.tolist()):
            value, window = divmod(key_i, w_codes.size)
            window_start = int(w_codes[window])
            dim_key = 'all' if prefix is None else f'{prefix}={names[value]}'
            acc = RollupAcc()
            members = order[bounds[i]:bounds[i + 1]]
            here = members[reporting[bounds[i]:bounds[i + 1]]]
            if here.size:
                acc.add_sessions(sids[j] for j in np.unique(
                    who[win_rows[here]]).tolist())
            started = members[has_start[bounds[i]:bounds[i + 1]]]
            if started.size:
                acc.starts.add_array(starts_ms[win_rows[started]])
            for name in values:
                setattr(acc, name, int(sums[name][i]))
            accs[(dim_key, window_start, window_start + size)] = acc
    return accs
