"""QoE rollups: per fixed window and dimension (all, content, CDN, stream type).

Reports are first walked per session in event-time order
(:class:`SessionTimeline`, a stateful DoFn with event-time timers, so that a
batch replay and a live stream walk the same order).  The walk turns them into
*contributions*, each timestamped where it belongs:

* every report: the session is active (a distinct-count sketch);
* the first ``p`` of a session: a play; the first ``msd``: a start-up time;
* a report carrying ``ec``: an error; the first ``sta=f``: a failure;
* each state's duration (until the next report carrying ``sta``): rebuffer or
  playing time, attributed to the window of the *state's* report (so it is
  known only when the next state report arrives: in a stream it may land in
  a LATE pane of its window);
* a session that closes (no report for the session gap) without having played
  and without failing: an exit before video start, in the window where it
  closed (last report + gap).

A report behind the walk (later than the watermark let through) still counts
as active, error and failure, but no longer changes the states already
walked; it is counted as ``rollups.late_reports``.

:class:`RollupFn` combines contributions per dimension and window: a HyperLogLog
sketch of session ids (lg_k=12, about 1.6% relative error), a KLL sketch of
start-up times (p50, p95) and sums, all mergeable.
"""
import collections
import typing

import apache_beam as beam
import datasketches
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec,
                                              ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms import deadletter, windows
from transforms.combiners import MergingCombineFn, Quantiles
from transforms.video.sessions import point_of

HLL_LG_K = 12
DIMENSIONS = ('all', 'content', 'cdn', 'stream_type')
UNKNOWN = 'unknown'


class Contribution(typing.NamedTuple):
    """What one session adds to a rollup window (all dimensions alike)."""
    session_id: str
    content_id: str
    cdn: str
    stream_type: str
    reports: int = 0          # reports (the row's count)
    play: int = 0
    start_ms: int = -1        # a start-up time (first msd), -1 if none
    rebuffer_ms: int = 0
    playing_ms: int = 0
    errors: int = 0
    failures: int = 0
    exits: int = 0


def dims_of(report) -> tuple:
    return (report.content_id or UNKNOWN, report.cdn or UNKNOWN,
            report.stream_type or UNKNOWN)


class _Walk(typing.NamedTuple):
    """The walk of one session so far."""
    last_ts: typing.Optional[int] = None     # the last report walked
    state: typing.Optional[tuple] = None     # (sta, ts, dims) in force
    played: bool = False
    failed: bool = False
    started: bool = False                    # a start-up time was given
    dims: tuple = (UNKNOWN, UNKNOWN, UNKNOWN)


def walk_report(sid, report, walk, gap_ms):
    """One report of a session, in event-time order: its contributions
    (timestamped); returns the walk after it."""
    if walk.last_ts is not None and report.ts_ms - walk.last_ts >= gap_ms:
        walk = _Walk()          # a new session (the previous one closed)
    dims = dims_of(report)
    play = report.state == 'p' and not walk.played
    failure = report.state == 'f' and not walk.failed
    start = report.msd if report.msd is not None and not walk.started \
        else -1
    yield TimestampedValue(Contribution(
        sid, *dims, reports=1, play=int(play), start_ms=start,
        errors=int(report.has_error), failures=int(failure)),
        report.event_time)
    state = walk.state
    if report.state:
        if state is not None and state[0] in ('r', 'p'):
            duration = report.ts_ms - state[1]
            yield TimestampedValue(Contribution(
                sid, *state[2],
                rebuffer_ms=duration if state[0] == 'r' else 0,
                playing_ms=duration if state[0] == 'p' else 0),
                Timestamp(micros=state[1] * 1000))
        state = (report.state, report.ts_ms, dims)
    return _Walk(last_ts=report.ts_ms, state=state,
                 played=walk.played or play, failed=walk.failed or failure,
                 started=walk.started or start >= 0,
                 dims=walk.dims if walk.last_ts is not None else dims)


def close_session(sid, walk, gap_ms):
    """The contribution of a session that closed (an exit before video start
    if it never played nor failed), at its close: last report + gap."""
    if walk.last_ts is not None and not walk.played and not walk.failed:
        yield TimestampedValue(
            Contribution(sid, *walk.dims, exits=1),
            Timestamp(micros=(walk.last_ts + gap_ms) * 1000))


def _order(report):
    # The order of the session's points (ties by sn, then by every field, so
    # that the walk is the same whatever order equal reports arrived in).
    return point_of(report)


def walk_session(kv, gap_ms):
    """Batch: all reports of a session id at once -> contributions."""
    sid, reports = kv
    walk = _Walk()
    for report in sorted(reports, key=_order):
        if walk.last_ts is not None and \
                report.ts_ms - walk.last_ts >= gap_ms:
            yield from close_session(sid, walk, gap_ms)
        walk = yield from walk_report(sid, report, walk, gap_ms)
    yield from close_session(sid, walk, gap_ms)


class _TimelineFn(beam.DoFn):
    PENDING = BagStateSpec('pending', PickleCoder())
    WALK = ReadModifyWriteStateSpec('walk', PickleCoder())
    NEXT = ReadModifyWriteStateSpec('next', PickleCoder())
    FLUSH = TimerSpec('flush', TimeDomain.WATERMARK)
    CLOSE = TimerSpec('close', TimeDomain.WATERMARK)

    def __init__(self, gap_ms: int, job: str, carries_origin=False):
        self._gap_ms = gap_ms
        self._late = Metrics.counter(job, 'rollups.late_reports')
        # reports come as (report, deadletter.Origin or None) and every
        # contribution leaves as a windows.WithRaw, a report's own
        # contribution with the report's origin (deadletter.Sourced)
        self._carries_origin = carries_origin

    def _report(self, item):
        return item[0] if self._carries_origin else item

    def _out(self, contributions, origin):
        if not self._carries_origin:
            yield from contributions
            return
        for tv in contributions:
            yield TimestampedValue(windows.WithRaw(
                tv.value, deadletter.Sourced(None, origin)
                if origin is not None and tv.value.reports else None),
                tv.timestamp)

    def process(self, kv, pending=beam.DoFn.StateParam(PENDING),
                walk_state=beam.DoFn.StateParam(WALK),
                next_state=beam.DoFn.StateParam(NEXT),
                flush=beam.DoFn.TimerParam(FLUSH)):
        sid, item = kv
        report = self._report(item)
        walk = walk_state.read() or _Walk()
        if walk.last_ts is not None and report.ts_ms < walk.last_ts:
            self._late.inc()
            yield from self._out(
                self._report_only(sid, report, walk, walk_state),
                item[1] if self._carries_origin else None)
            return
        pending.add(item)
        due = next_state.read()
        if due is None or report.ts_ms < due:
            next_state.write(report.ts_ms)
            flush.set(Timestamp(micros=report.ts_ms * 1000))

    def _report_only(self, sid, report, walk, walk_state):
        failure = report.state == 'f' and not walk.failed
        if failure:
            walk_state.write(walk._replace(failed=True))
        yield TimestampedValue(Contribution(
            sid, *dims_of(report), reports=1, errors=int(report.has_error),
            failures=int(failure)), report.event_time)

    @on_timer(FLUSH)
    def release(self, key=beam.DoFn.KeyParam,
                fired=beam.DoFn.TimestampParam,
                pending=beam.DoFn.StateParam(PENDING),
                walk_state=beam.DoFn.StateParam(WALK),
                next_state=beam.DoFn.StateParam(NEXT),
                flush=beam.DoFn.TimerParam(FLUSH),
                close=beam.DoFn.TimerParam(CLOSE)):
        limit = fired.micros // 1000
        items = list(pending.read())
        report = self._report
        due = sorted((i for i in items if report(i).ts_ms <= limit),
                     key=lambda i: _order(report(i)))
        rest = [i for i in items if report(i).ts_ms > limit]
        pending.clear()
        for i in rest:
            pending.add(i)
        if rest:
            first = min(report(i).ts_ms for i in rest)
            next_state.write(first)
            flush.set(Timestamp(micros=first * 1000))
        else:
            next_state.clear()
        walk = walk_state.read() or _Walk()
        for item in due:
            if self._carries_origin:
                contributions, walk = _walked(walk_report(
                    key, item[0], walk, self._gap_ms))
                yield from self._out(contributions, item[1])
            else:
                walk = yield from walk_report(key, item, walk,
                                              self._gap_ms)
        walk_state.write(walk)
        if walk.last_ts is not None:
            close.set(Timestamp(micros=(walk.last_ts + self._gap_ms) * 1000))

    @on_timer(CLOSE)
    def closed(self, key=beam.DoFn.KeyParam,
               fired=beam.DoFn.TimestampParam,
               walk_state=beam.DoFn.StateParam(WALK)):
        walk = walk_state.read()
        if walk is None or walk.last_ts is None or \
                fired.micros // 1000 < walk.last_ts + self._gap_ms:
            return
        yield from self._out(close_session(key, walk, self._gap_ms), None)
        # The session is over; a later report starts a new one.
        walk_state.write(_Walk(last_ts=walk.last_ts))


def _walked(walking):
    """A walk step's contributions (a list) and the walk after it."""
    contributions = []
    try:
        while True:
            contributions.append(next(walking))
    except StopIteration as stop:
        return contributions, stop.value


class SessionTimeline(beam.PTransform):
    """``PCollection[VideoReport]`` -> ``PCollection[Contribution]``
    (timestamped, in the global window).

    In a stream, a stateful DoFn walks each session as the watermark passes
    its reports; in a batch run (bounded input, one pass) all reports of a
    session id are grouped and walked at once, which is the same walk (the
    local runner does not hold a batch's watermark for a DoFn's timers).

    ``carries_origin`` (a stream): the input is ``(report,
    deadletter.Origin or None)`` pairs and every contribution leaves as a
    ``windows.WithRaw(contribution, raw)``: ``raw`` a
    ``deadletter.Sourced(None, origin)`` for a report's own contribution
    (``reports`` 1) whose origin is known, else None (a duration or an
    exit comes from the walk of several reports)."""

    def __init__(self, gap_seconds: float, job: str, streaming: bool,
                 carries_origin=False, label=None):
        super().__init__(label)
        self._gap_ms = int(round(gap_seconds * 1000))
        self._job = job
        self._streaming = streaming
        self._carries_origin = carries_origin and streaming

    def expand(self, reports):
        if self._carries_origin:
            keyed = reports | 'KeyBySession' >> beam.Map(
                lambda p: (p[0].session_id, p)).with_output_types(
                    typing.Tuple[str, typing.Any])
        else:
            keyed = (reports
                     | 'KeyBySession' >> beam.Map(
                         lambda r: (r.session_id, r)).with_output_types(
                             typing.Tuple[str, typing.Any]))
        if self._streaming:
            return keyed | 'Walk' >> beam.ParDo(
                _TimelineFn(self._gap_ms, self._job, self._carries_origin))
        return (keyed
                | 'GlobalWindow' >> beam.WindowInto(
                    beam.transforms.window.GlobalWindows())
                | 'GroupSession' >> beam.GroupByKey()
                | 'Walk' >> beam.FlatMap(walk_session, self._gap_ms))


def by_dimension(c: Contribution):
    """A contribution once per dimension: (dimension key, contribution); a
    ``windows.WithRaw`` (carrying its origin) goes on as it is, keyed by
    its contribution's dimensions."""
    d = c.value if isinstance(c, windows.WithRaw) else c
    yield 'all', c
    yield f'content={d.content_id}', c
    yield f'cdn={d.cdn}', c
    yield f'stream_type={d.stream_type}', c


class RollupAcc:
    """Mergeable: distinct sessions (HLL), start-up times (KLL), sums."""
    __slots__ = ('sessions', 'starts', 'count', 'plays', 'rebuffer_ms',
                 'playing_ms', 'errors', 'failures', 'exits')

    def __init__(self):
        self.sessions = datasketches.hll_union(HLL_LG_K)
        self.starts = Quantiles()
        self.count = self.plays = self.rebuffer_ms = self.playing_ms = 0
        self.errors = self.failures = self.exits = 0

    def add(self, c: Contribution) -> 'RollupAcc':
        if c.reports:
            sketch = datasketches.hll_sketch(HLL_LG_K)
            sketch.update(c.session_id)
            self.sessions.update(sketch)
        if c.start_ms >= 0:
            self.starts.add(c.start_ms)
        self.count += c.reports
        self.plays += c.play
        self.rebuffer_ms += c.rebuffer_ms
        self.playing_ms += c.playing_ms
        self.errors += c.errors
        self.failures += c.failures
        self.exits += c.exits
        return self

    def add_sessions(self, session_ids) -> 'RollupAcc':
        sketch = datasketches.hll_sketch(HLL_LG_K)
        # (map in C: no interpreter loop per session id)
        collections.deque(map(sketch.update, session_ids), maxlen=0)
        self.sessions.update(sketch)
        return self

    def merge(self, other: 'RollupAcc') -> 'RollupAcc':
        self.sessions.update(other.sessions.get_result())
        self.starts.merge(other.starts)
        self.count += other.count
        self.plays += other.plays
        self.rebuffer_ms += other.rebuffer_ms
        self.playing_ms += other.playing_ms
        self.errors += other.errors
        self.failures += other.failures
        self.exits += other.exits
        return self

    @property
    def contributions(self) -> int:
        return self.count

    def __getstate__(self):
        return (bytes(self.sessions.get_result().serialize_compact()),
                self.starts.__getstate__(), self.count, self.plays,
                self.rebuffer_ms, self.playing_ms, self.errors,
                self.failures, self.exits)

    def __setstate__(self, state):
        (hll, starts, self.count, self.plays, self.rebuffer_ms,
         self.playing_ms, self.errors, self.failures, self.exits) = state
        self.sessions = datasketches.hll_union(HLL_LG_K)
        self.sessions.update(datasketches.hll_sketch.deserialize(hll))
        self.starts = Quantiles()
        self.starts.__setstate__(starts)


class RollupFn(MergingCombineFn):
    ACCUMULATOR = RollupAcc

    def create_accumulator(self):
        return RollupAcc()

    def add_record(self, acc, contribution):
        return acc.add(contribution)


def rollup_count(x) -> int:
    """The reports a contribution or an accumulator holds (the row's
    ``count``); durations and exits hold none."""
    return x.count if isinstance(x, RollupAcc) else x.reports


class Rollup(typing.NamedTuple):
    """One row of the ``qoe_rollups`` table."""
    dimension: str                 # all, content, cdn, stream_type
    value: str                     # 'all', or the content id, CDN, st
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str
    pane_index: int
    count: int                     # reports in the window
    active_sessions: int           # distinct sessions reporting (HLL)
    plays: int                     # sessions whose first p is in the window
    video_start_time_p50_ms: typing.Optional[float]
    video_start_time_p95_ms: typing.Optional[float]
    rebuffer_ms: int
    playing_ms: int
    rebuffering_ratio: typing.Optional[float]
    errors: int
    failures: int
    exits_before_video_start: int

    IDENTITY_FIELDS = ('dimension', 'value', 'window_start', 'window_end',
                       'pane_index')
    # Files hold the rollups whose window starts in the same hour (and
    # pane), as session files do, not one short window each.
    FILE_PERIOD_SECONDS = 3600


beam.coders.registry.register_coder(Rollup, beam.coders.RowCoder)


class AlertInput(typing.NamedTuple):
    """What the alerts read of a ``qoe_rollups`` row: its key, window and
    pane, and the fields the rules judge (the block path sends these to
    the alerts, not the rows it writes as Arrow tables)."""
    dimension: str
    value: str
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str
    pane_index: int
    active_sessions: int
    video_start_time_p95_ms: typing.Optional[float]
    rebuffering_ratio: typing.Optional[float]


def rollup_key(row: Rollup) -> str:
    return row.dimension if row.dimension == 'all' else \
        f'{row.dimension}={row.value}'


def rollup_values(key: str, acc: RollupAcc) -> dict:
    """The fields of a ``qoe_rollups`` row but its window and pane."""
    dimension, _, value = key.partition('=')
    p50, p95 = acc.starts.quantiles((0.5, 0.95))
    total = acc.rebuffer_ms + acc.playing_ms
    return dict(
        dimension=dimension, value=value or 'all', count=acc.count,
        active_sessions=int(round(acc.sessions.get_result().get_estimate())),
        plays=acc.plays, video_start_time_p50_ms=p50,
        video_start_time_p95_ms=p95, rebuffer_ms=acc.rebuffer_ms,
        playing_ms=acc.playing_ms,
        rebuffering_ratio=acc.rebuffer_ms / total if total else None,
        errors=acc.errors, failures=acc.failures,
        exits_before_video_start=acc.exits)


def to_rollup(key: str, acc: RollupAcc, pane: dict) -> Rollup:
    return Rollup(**rollup_values(key, acc), **pane)
