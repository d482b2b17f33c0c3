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
from apache_beam.utils.timestamp import Timestamp

from transforms import deadletter, windows
from transforms.columnar import LineBlock, line_bounds
from transforms.decode import DecodeCounters, Filtered, decode_payload
from transforms.video import cmcd_columnar
from transforms.video.records import VideoReport
from transforms.video.rollups import (RollupAcc, by_dimension, close_session,
                                      walk_report, _Walk)
from transforms.video.sessions import (BR, CDN, CID, ERR, MSD, SF, SN, ST,
                                       STATE, TS, SessionPoints, point_of)


class BlockFragmentsFn(beam.DoFn):
    """LineBlock s (or single payloads) -> (session id, SessionPoints) per
    session id and block; dead letters to ``dead``."""

    def __init__(self, decoder, stage, job, source='', max_bytes=1 << 20,
                 json_fast=False):
        self._decoder = decoder
        self._stage = stage
        self._source = source
        self._max_bytes = max_bytes
        self._json_fast = json_fast
        self._counters = DecodeCounters(job)

    def process(self, element):
        points = collections.defaultdict(list)
        if not isinstance(element, LineBlock):
            lines = [element]
        elif self._json_fast:
            # Canonical CMCD JSON lines are read a block at a time; the rest
            # by the reference decoder, one by one.
            data = element.data
            starts, ends = line_bounds(data)
            columns, others = cmcd_columnar.decode_block(
                data, starts, ends, self._max_bytes)
            if columns is not None:
                for sid, point in columns.points():
                    points[sid].append(point)
            lines = [data[starts[i]:ends[i]] for i in others.tolist()]
        else:
            lines = element.lines()
        for raw in lines:
            result = decode_payload(raw, self._decoder, self._stage,
                                    self._source, self._max_bytes)
            if isinstance(result, Filtered):
                self._counters.filtered(result.name)
            elif isinstance(result, deadletter.DeadLetter):
                self._counters.dead()
                yield beam.pvalue.TaggedOutput(deadletter.DEAD, result)
            else:
                points[result.session_id].append(point_of(result))
        self._counters.decoded(sum(len(p) for p in points.values()))
        for sid, session_points in points.items():
            yield sid, SessionPoints.of(session_points)


def report_of(sid, p) -> VideoReport:
    """A point back as the report fields the walk reads."""
    return VideoReport(
        event_time=Timestamp(micros=p[TS] * 1000), ts_ms=p[TS],
        session_id=sid, content_id=p[CID] or None, cdn=p[CDN] or None,
        stream_type=p[ST] or None, streaming_format=p[SF] or None,
        event=None, state=p[STATE] or None,
        sn=None if p[SN] < 0 else p[SN], msd=None if p[MSD] < 0 else p[MSD],
        video_bitrate_kbps=None if p[BR] < 0 else p[BR], has_error=p[ERR],
        status=None, format='')


def _sessions(points, gap_ms):
    """Sorted points -> lists of points, split where the gap separates."""
    if not points:
        return []
    ts = np.fromiter((p[TS] for p in points), np.int64, len(points))
    cuts = (np.flatnonzero(np.diff(ts) >= gap_ms) + 1).tolist()
    return [points[a:b] for a, b in zip([0] + cuts, cuts + [len(points)])]


class SessionsAndRollupsFn(beam.DoFn):
    """(session id, fragments) -> sessions ``((sid, start us, end us),
    SessionPoints)`` (main output) and rollup partials ``((dimension key,
    start us, end us), RollupAcc)`` (tag ``rollups``), in the global window."""
    ROLLUPS = 'rollups'

    def __init__(self, gap_seconds, rollup_window):
        self._gap_ms = int(round(gap_seconds * 1000))
        self._rollup_window = rollup_window

    def process(self, kv):
        sid, fragments = kv
        merged = SessionPoints()
        for fragment in fragments:
            merged.merge(fragment)
        gap_us = self._gap_ms * 1000
        for session in _sessions(merged.points, self._gap_ms):
            start = session[0][TS] * 1000
            end = session[-1][TS] * 1000 + gap_us
            yield (sid, start, end), SessionPoints(session)
        for key, acc in self._rollups(sid, merged.points).items():
            yield beam.pvalue.TaggedOutput(self.ROLLUPS, (key, acc))

    def _rollups(self, sid, points):
        contributions = []
        walk = _Walk()
        for p in points:
            report = report_of(sid, p)
            if walk.last_ts is not None and \
                    report.ts_ms - walk.last_ts >= self._gap_ms:
                contributions.extend(close_session(sid, walk, self._gap_ms))
            walk = yield_into(contributions, walk_report(
                sid, report, walk, self._gap_ms))
        contributions.extend(close_session(sid, walk, self._gap_ms))
        if not contributions:
            return {}
        event_us = np.fromiter((c.timestamp.micros for c in contributions),
                               np.int64, len(contributions))
        rows, starts = windows.window_starts(self._rollup_window, event_us)
        size = int(round(self._rollup_window.size * 1e6))
        accs = {}
        for row, start in zip(rows.tolist(), starts.tolist()):
            c = contributions[row].value
            for key, value in by_dimension(c):
                acc = accs.get((key, start, start + size))
                if acc is None:
                    acc = accs[(key, start, start + size)] = RollupAcc()
                acc.add(value)
        return accs


def yield_into(out: list, generator):
    """Run a generator that returns a value: its items into ``out``; its
    return value returned."""
    while True:
        try:
            out.append(next(generator))
        except StopIteration as stop:
            return stop.value
