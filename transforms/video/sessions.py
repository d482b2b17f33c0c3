"""Session metrics: one row per viewing session (``sid``) and session window.

A session's reports, in event-time order (ties by ``sn``), that carry
``sta`` form a timeline of player states: each state lasts from its report's
``ts`` until the next report carrying ``sta``; time after the last report is
not counted.  The metrics (docs/video_qoe.md defines them):

* ``video_start_time_ms``: the first ``msd`` of the session (None if none);
* ``rebuffer_count``: entries into state ``r`` (a report with ``sta=r`` whose
  previous state was not ``r``); ``rebuffer_ms``, ``playing_ms``: time in
  states ``r`` and ``p``; ``rebuffering_ratio`` = rebuffer / (rebuffer +
  playing), None when both are 0;
* ``error_count``: reports carrying ``ec``; ``failed``: the session reached
  ``sta=f``; ``exit_before_video_start``: never reached ``p`` and not failed;
* ``bitrate_switches``: changes of the video ``br`` between consecutive
  reports carrying it; ``avg_bitrate_kbps``: the playing-time-weighted mean
  of the video ``br`` in force (the last one reported at or before the start
  of each playing interval; intervals before any is reported are left out).

The accumulator, :class:`SessionPoints`, is the session's reports as sorted
compact points: merging two is merging two sorted lists, which is associative
and commutative, so session fragments built anywhere (a worker, a block of
the columnar path) merge into the accumulator of the whole session.
"""
import heapq
import typing

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

from transforms.combiners import MergingCombineFn

# A point: (ts_ms, sn, state, video_br, msd, has_error, content_id, cdn,
# stream_type, streaming_format).  Missing values are -1 / '' so that points
# sort totally (the order of equal points does not change any metric).
TS, SN, STATE, BR, MSD, ERR, CID, CDN, ST, SF = range(10)


def point_of(report) -> tuple:
    return (report.ts_ms, -1 if report.sn is None else report.sn,
            report.state or '',
            -1 if report.video_bitrate_kbps is None
            else report.video_bitrate_kbps,
            -1 if report.msd is None else report.msd,
            bool(report.has_error), report.content_id or '',
            report.cdn or '', report.stream_type or '',
            report.streaming_format or '')


class SessionPoints:
    """A session (or a fragment of one): its points, sorted."""
    __slots__ = ('points',)

    def __init__(self, points=None):
        self.points = points if points is not None else []

    @classmethod
    def of(cls, points) -> 'SessionPoints':
        return cls(sorted(points))

    def add(self, point) -> 'SessionPoints':
        points = self.points
        if not points or points[-1] <= point:
            points.append(point)
        else:
            points.insert(_bisect_right(points, point), point)
        return self

    def merge(self, other: 'SessionPoints') -> 'SessionPoints':
        if not other.points:
            return self
        if not self.points:
            self.points = list(other.points)
        elif self.points[-1] <= other.points[0]:
            self.points.extend(other.points)
        else:
            self.points = list(heapq.merge(self.points, other.points))
        return self

    @property
    def count(self) -> int:
        return len(self.points)

    def __getstate__(self):
        return self.points

    def __setstate__(self, state):
        self.points = state

    def __repr__(self):
        return f'SessionPoints({len(self.points)} points)'


def _bisect_right(points, point):
    lo, hi = 0, len(points)
    while lo < hi:
        mid = (lo + hi) // 2
        if point < points[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _first(points, field):
    for p in points:
        if p[field]:
            return p[field]
    return None


def metrics(points) -> dict:
    """The session metrics of sorted points (see the module doc)."""
    video_start = next((p[MSD] for p in points if p[MSD] >= 0), None)
    rebuffer_count = rebuffer_ms = playing_ms = 0
    weighted = weighted_ms = 0
    failed = played = False
    errors = sum(1 for p in points if p[ERR])
    switches = 0
    last_br = None          # the video br in force
    prev_state = None       # (state, ts, br in force at its start)
    for p in points:
        if p[BR] >= 0:
            if last_br is not None and p[BR] != last_br:
                switches += 1
            last_br = p[BR]
        state = p[STATE]
        if not state:
            continue
        if prev_state is not None:
            kind, start, br = prev_state
            duration = p[TS] - start
            if kind == 'r':
                rebuffer_ms += duration
            elif kind == 'p':
                playing_ms += duration
                if br is not None:
                    weighted += br * duration
                    weighted_ms += duration
        if state == 'r' and (prev_state is None or prev_state[0] != 'r'):
            rebuffer_count += 1
        if state == 'f':
            failed = True
        if state == 'p':
            played = True
        prev_state = (state, p[TS], last_br)
    total = rebuffer_ms + playing_ms
    return {
        'video_start_time_ms': video_start,
        'rebuffer_count': rebuffer_count,
        'rebuffer_ms': rebuffer_ms,
        'playing_ms': playing_ms,
        'rebuffering_ratio': rebuffer_ms / total if total else None,
        'error_count': errors,
        'failed': failed,
        'exit_before_video_start': not played and not failed,
        'bitrate_switches': switches,
        'avg_bitrate_kbps': weighted / weighted_ms if weighted_ms else None,
    }


class Session(typing.NamedTuple):
    """One row of the ``sessions`` table."""
    session_id: str
    content_id: typing.Optional[str]       # the first cid reported
    cdn: typing.Optional[str]              # the first CDN reported
    stream_type: typing.Optional[str]      # the first st reported
    streaming_format: typing.Optional[str]  # the first sf reported
    session_start: Timestamp               # first report's event time
    session_end: Timestamp                 # last report's event time
    report_count: int
    video_start_time_ms: typing.Optional[int]
    rebuffer_count: int
    rebuffer_ms: int
    playing_ms: int
    rebuffering_ratio: typing.Optional[float]
    error_count: int
    failed: bool
    exit_before_video_start: bool
    bitrate_switches: int
    avg_bitrate_kbps: typing.Optional[float]
    window_start: Timestamp                # first ts .. last ts + gap
    window_end: Timestamp
    pane_timing: str
    pane_index: int

    IDENTITY_FIELDS = ('session_id', 'window_start', 'window_end',
                       'pane_index')
    # A session window is one session's: files hold the sessions whose
    # window starts in the same hour (and pane), not one session each.
    FILE_PERIOD_SECONDS = 3600


beam.coders.registry.register_coder(Session, beam.coders.RowCoder)


class SessionFn(MergingCombineFn):
    """``VideoReport`` s (or :class:`SessionPoints` fragments) of one session
    -> :class:`SessionPoints`."""
    ACCUMULATOR = SessionPoints

    def create_accumulator(self):
        return SessionPoints()

    def add_record(self, acc, report):
        return acc.add(point_of(report))

    def compact(self, acc):
        return acc


def session_count(x) -> int:
    """How many reports a report (1) or a fragment holds."""
    return x.count if isinstance(x, SessionPoints) else 1


def to_session(session_id, acc: SessionPoints, pane: dict) -> Session:
    points = acc.points
    return Session(
        session_id=session_id,
        content_id=_first(points, CID), cdn=_first(points, CDN),
        stream_type=_first(points, ST), streaming_format=_first(points, SF),
        session_start=Timestamp(micros=points[0][TS] * 1000),
        session_end=Timestamp(micros=points[-1][TS] * 1000),
        report_count=len(points), **metrics(points), **pane)
