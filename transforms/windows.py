"""Window and trigger specs from text, and the pane annotation every output row carries.

Window specs::

    fixed:60s            tumbling windows of 60 seconds
    sliding:5m/1m        5-minute windows starting every minute
    session:30m          sessions closed by 30 minutes without events (per key)

Durations take a unit: ``ms``, ``s``, ``m``, ``h``, ``d`` (a bare number is seconds).

Trigger specs are comma-separated settings, in any order::

    early=10s            speculative EARLY panes every 10 s of processing time
    late=1               a LATE pane after every N late records (within lateness)
    lateness=10m         allowed lateness; later records go to the dead letters
    accumulating         each pane holds everything so far (default) ...
    discarding           ... or only what arrived since the previous pane

``default`` (or an empty spec) means one ON_TIME pane per window, no lateness,
accumulating.  A ``lateness`` without ``late`` implies ``late=1`` so that late
records are never kept without being emitted.
"""
import datetime
import re
import typing

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.transforms import trigger as beam_trigger
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming


class SpecError(ValueError):
    """A window or trigger spec that cannot be understood; the message says why."""


_UNITS = {'ms': 0.001, 's': 1.0, 'm': 60.0, 'h': 3600.0, 'd': 86400.0}
_DURATION = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$')


def parse_duration(text: str) -> float:
    """'90s', '5m', '1.5h', '250ms', '30' (seconds) -> seconds (float > 0)."""
    m = _DURATION.match(str(text))
    if not m:
        raise SpecError(
            f'bad duration {text!r}: expected a number with a unit '
            f'(ms, s, m, h, d), e.g. 60s or 5m')
    seconds = float(m.group(1)) * _UNITS[m.group(2) or 's']
    if seconds <= 0:
        raise SpecError(f'bad duration {text!r}: must be greater than zero')
    return seconds


def _duration(seconds: float) -> Duration:
    # Whole microseconds: the runner API has no room for fractions of them.
    return Duration(micros=int(round(seconds * 1e6)))


def format_duration(seconds: float) -> str:
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60), ('s', 1)):
        if seconds >= size and seconds % size == 0:
            return f'{int(seconds // size)}{unit}'
    return f'{int(round(seconds * 1000))}ms'


class WindowSpec(typing.NamedTuple):
    kind: str           # 'fixed' | 'sliding' | 'session'
    size: float         # seconds (fixed/sliding size, session gap)
    period: float = 0.0  # seconds (sliding only)

    def window_fn(self):
        size = _duration(self.size)
        if self.kind == 'fixed':
            return beam_window.FixedWindows(size)
        if self.kind == 'sliding':
            return beam_window.SlidingWindows(size, _duration(self.period))
        return beam_window.Sessions(size)

    def closes_at(self, seconds: float, lateness: float) -> float:
        """When (event time, seconds) the last window holding an event at
        ``seconds`` has taken its last record: its end plus the allowed
        lateness.  Infinite for sessions (a session can always grow)."""
        if self.kind == 'session':
            return float('inf')
        step = self.size if self.kind == 'fixed' else self.period
        micros = int(round(seconds * 1e6))
        step_us = int(round(step * 1e6))
        last_start = micros - micros % step_us
        return (last_start + int(round(self.size * 1e6))) / 1e6 + lateness

    def __str__(self):
        if self.kind == 'sliding':
            return (f'sliding:{format_duration(self.size)}/'
                    f'{format_duration(self.period)}')
        return f'{self.kind}:{format_duration(self.size)}'


class FinalAt(typing.NamedTuple):
    """Event time -> when every window of a job holding an event at that time
    has emitted its final pane (the latest ``closes_at`` of its windows).
    ``lateness`` is the job's allowed lateness; ``own``, where given, the
    allowed lateness of each window's grouping (None: the job's), for a
    grouping that keeps none or another (trades' anomaly windows: none)."""
    windows: tuple            # WindowSpec, ...
    lateness: float
    own: tuple = ()           # float or None per window; () : the job's

    def __call__(self, seconds: float) -> float:
        return max(w.closes_at(seconds, self._of(i))
                   for i, w in enumerate(self.windows))

    def _of(self, i):
        own = self.own[i] if i < len(self.own) else None
        return self.lateness if own is None else own

    @property
    def least_lateness(self) -> float:
        """The least allowed lateness of the windows' groupings: a window
        holding an event closes at least this long after it."""
        return min(self._of(i) for i in range(len(self.windows)))


class LateFrom(typing.NamedTuple):
    """Event time -> the earliest event time (the watermark at a grouping)
    after which a record at that time may be late for one of ``windows``:
    the first of its windows to close (its end plus the allowed lateness);
    for sessions its own window's, ``[t, t + gap)``, or, where a session's
    trigger may finish before its lateness runs out (no late firings, or
    no allowed lateness), ``t`` itself (it may join a session that has
    finished)."""
    windows: tuple            # WindowSpec, ...
    trigger: 'TriggerSpec'

    def __call__(self, seconds: float) -> float:
        lateness = self.trigger.lateness
        found = []
        for w in self.windows:
            if w.kind == 'session':
                finishes = not self.trigger.late or not lateness
                found.append(seconds if finishes
                             else seconds + w.size + lateness)
                continue
            step = w.size if w.kind == 'fixed' else w.period
            micros = int(round(seconds * 1e6))
            step_us = int(round(step * 1e6))
            size_us = int(round(w.size * 1e6))
            start = micros - micros % step_us
            while start - step_us > micros - size_us:
                start -= step_us
            found.append((start + size_us) / 1e6 + lateness)
        return min(found)

    @property
    def keeps_out(self) -> bool:
        """Whether a restart may keep a record it reads again out of just
        those of its windows that were final at the horizon it resumes
        (``deadletter.Origin.final_by``, dropped where the grouping
        assigns it, ``transforms.aggregate``), instead of the horizon
        being held before them (``transforms.io._kafka_commits``): where
        every window is fixed by the record's own event time (fixed and
        sliding), not a session, which merges into windows whose close is
        not the one the record was assigned."""
        return all(w.kind != 'session' for w in self.windows)


def parse_window(text: str) -> WindowSpec:
    """'fixed:60s' | 'sliding:5m/1m' | 'session:30m' -> WindowSpec."""
    try:
        return _parse_window(text)
    except SpecError as e:
        if str(e).startswith('bad window spec'):
            raise
        raise SpecError(f'bad window spec {text!r}: {e}') from None


def _parse_window(text: str) -> WindowSpec:
    kind, sep, rest = str(text).strip().partition(':')
    kind = kind.strip().lower()
    if not sep or kind not in ('fixed', 'sliding', 'session'):
        raise SpecError(
            f'bad window spec {text!r}: expected fixed:SIZE, '
            f'sliding:SIZE/PERIOD or session:GAP, e.g. fixed:60s')
    if kind == 'sliding':
        size_text, slash, period_text = rest.partition('/')
        if not slash:
            raise SpecError(
                f'bad window spec {text!r}: sliding needs SIZE/PERIOD, '
                f'e.g. sliding:5m/1m')
        size, period = parse_duration(size_text), parse_duration(period_text)
        if period > size:
            raise SpecError(
                f'bad window spec {text!r}: period {period_text} is longer '
                f'than the window {size_text}')
        return WindowSpec('sliding', size, period)
    return WindowSpec(kind, parse_duration(rest))


class TriggerSpec(typing.NamedTuple):
    early: typing.Optional[float] = None   # seconds of processing time
    late: typing.Optional[int] = None      # late records per LATE pane
    lateness: float = 0.0                  # allowed lateness, seconds
    accumulating: bool = True

    def trigger(self):
        early = (beam_trigger.AfterProcessingTime(int(self.early))
                 if self.early else None)
        late = beam_trigger.AfterCount(self.late) if self.late else None
        return beam_trigger.AfterWatermark(early=early, late=late)

    @property
    def accumulates_panes(self) -> bool:
        """True when a window can fire several panes that accumulate."""
        return self.accumulating and bool(self.early or self.lateness)

    def for_mode(self, streaming: bool) -> 'TriggerSpec':
        """The spec as it applies in this mode: a bounded (batch) run has no
        processing time, so early firings are dropped there."""
        return self if streaming else self._replace(early=None)

    def accumulation_mode(self):
        return (beam_trigger.AccumulationMode.ACCUMULATING if self.accumulating
                else beam_trigger.AccumulationMode.DISCARDING)

    def __str__(self):
        parts = []
        if self.early:
            parts.append(f'early={format_duration(self.early)}')
        if self.late:
            parts.append(f'late={self.late}')
        if self.lateness:
            parts.append(f'lateness={format_duration(self.lateness)}')
        parts.append('accumulating' if self.accumulating else 'discarding')
        return ','.join(parts)


def parse_trigger(text: str) -> TriggerSpec:
    """'early=10s,late=1,lateness=10m,accumulating' -> TriggerSpec."""
    try:
        return _parse_trigger(text)
    except SpecError as e:
        if str(e).startswith('bad trigger spec'):
            raise
        raise SpecError(f'bad trigger spec {text!r}: {e}') from None


def _parse_trigger(text: str) -> TriggerSpec:
    text = str(text).strip()
    if text.lower() in ('', 'default'):
        return TriggerSpec()
    early, late, lateness, accumulating = None, None, 0.0, None
    for part in text.split(','):
        key, eq, value = part.strip().partition('=')
        key = key.strip().lower()
        if not eq and key in ('accumulating', 'discarding'):
            if accumulating is not None:
                raise SpecError(
                    f'bad trigger spec {text!r}: give either accumulating '
                    f'or discarding, once')
            accumulating = key == 'accumulating'
        elif eq and key == 'early':
            early = parse_duration(value)
            if early != int(early):
                raise SpecError(
                    f'bad trigger spec {text!r}: early= takes whole seconds '
                    f'(got {value.strip()})')
        elif eq and key == 'late':
            if not value.strip().isdigit() or int(value) < 1:
                raise SpecError(
                    f'bad trigger spec {text!r}: late=N needs a whole number '
                    f'of records >= 1')
            late = int(value)
        elif eq and key == 'lateness':
            lateness = 0.0 if value.strip() in ('0', '0s') else parse_duration(
                value)
        else:
            raise SpecError(
                f'bad trigger spec {text!r}: unknown setting {part.strip()!r}; '
                f'expected early=DURATION, late=N, lateness=DURATION, '
                f'accumulating or discarding')
    if late and not lateness:
        raise SpecError(
            f'bad trigger spec {text!r}: late=N needs lateness=DURATION > 0 '
            f'(without allowed lateness there is no late data to fire on)')
    if lateness and not late:
        late = 1
    return TriggerSpec(early, late, lateness,
                       True if accumulating is None else accumulating)


class ApplyWindow(beam.PTransform):
    """``PCollection[T]`` (event-timestamped) -> the same, windowed and triggered
    by the specs.  Elements keep their timestamps."""

    def __init__(self, window: WindowSpec, trigger: TriggerSpec, label=None):
        super().__init__(label)
        self._window = window
        self._trigger = trigger

    def expand(self, pcoll):
        return pcoll | beam.WindowInto(
            self._window.window_fn(),
            trigger=self._trigger.trigger(),
            accumulation_mode=self._trigger.accumulation_mode(),
            allowed_lateness=_duration(self._trigger.lateness))


TIMING_NAMES = {
    PaneInfoTiming.EARLY: 'EARLY',
    PaneInfoTiming.ON_TIME: 'ON_TIME',
    PaneInfoTiming.LATE: 'LATE',
    PaneInfoTiming.UNKNOWN: 'UNKNOWN',
}


def to_datetime(ts: Timestamp) -> datetime.datetime:
    """A Beam timestamp as an aware UTC datetime (microsecond precision)."""
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + \
        datetime.timedelta(microseconds=ts.micros)


def pane_fields(window, pane) -> dict:
    """window_start, window_end (UTC Timestamps), pane_timing and pane_index."""
    return {
        'window_start': window.start,
        'window_end': window.end,
        'pane_timing': TIMING_NAMES.get(pane.timing, 'UNKNOWN'),
        'pane_index': pane.index,
    }


class KeepWindows(beam_window.NonMergingWindowFn):
    """Keeps the window each element already has.

    The columnar fast path assigns windows itself, vectorised, and emits each
    partial aggregate in its own window; ``WindowInto(KeepWindows(), trigger=...)``
    then only sets the trigger and lateness without reassigning anything.
    """

    def assign(self, context):
        return [context.window]

    def get_window_coder(self):
        return coders.IntervalWindowCoder()

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


def window_starts(spec: WindowSpec, event_us):
    """Vectorised window assignment (fixed and sliding windows).

    ``event_us`` is an int64 array of event times in microseconds.  Returns
    ``(rows, starts)``: for every window a record belongs to, the record's row
    index and the window's start (microseconds).  The same windows as Beam's
    FixedWindows / SlidingWindows (offset 0) assign.
    """
    import numpy as np   # pylint: disable=import-outside-toplevel
    event_us = np.asarray(event_us, dtype=np.int64)
    size = int(round(spec.size * 1e6))
    if spec.kind == 'fixed':
        return np.arange(event_us.size), event_us - event_us % size
    if spec.kind != 'sliding':
        raise ValueError(f'{spec} has no vectorised assignment')
    period = int(round(spec.period * 1e6))
    last = event_us - event_us % period          # latest window start <= t
    per_record = -(-size // period)              # windows per record (ceil)
    rows = np.repeat(np.arange(event_us.size), per_record)
    starts = np.repeat(last, per_record) - \
        np.tile(np.arange(per_record, dtype=np.int64) * period, event_us.size)
    keep = starts + size > np.repeat(event_us, per_record)
    return rows[keep], starts[keep]


class ApplyKeptWindows(beam.PTransform):
    """Sets trigger and lateness on elements already in their windows."""

    def __init__(self, trigger: TriggerSpec, label=None):
        super().__init__(label)
        self._trigger = trigger

    def expand(self, pcoll):
        return pcoll | beam.WindowInto(
            KeepWindows(),
            trigger=self._trigger.trigger(),
            accumulation_mode=self._trigger.accumulation_mode(),
            allowed_lateness=_duration(self._trigger.lateness))


# A grouping step whose label contains this keeps what arrives after the
# allowed lateness: the local runner emits it, in its window, as LateRecords
# where Beam would drop it (see pipelines/local_runner.py).
KEEP_LATE_LABEL = 'KeepLate'


class WithRaw(typing.NamedTuple):
    """A value on its way to a grouping that keeps late records, with what
    it was read from: ``raw`` is one payload (bytes or text: a record's), or
    a sequence of payloads, one per record it covers (an Arrow binary array:
    a columnar partial's lines).  The grouping keeps ``value`` alone in its
    state; only a late value keeps ``raw``, which its dead letters hold (see
    pipelines/local_runner.py and transforms/aggregate.py).  ``raw`` None:
    the late dead letter holds the value as JSON; a ``deadletter.Sourced``:
    that payload (or None) and the origin of the record the value stands
    for, which its late dead letters name with their output."""
    value: typing.Any
    raw: typing.Any


class LateRecords(typing.NamedTuple):
    """The values of one key that arrived for ``window`` after its allowed
    lateness, ``seconds_late`` seconds after it closed (by the input
    watermark that decided it).  ``finished``: the window was still within
    its allowed lateness but its trigger had fired its last pane (for merging
    windows: the session the records would have joined), and it takes
    nothing more either."""
    values: list
    seconds_late: float
    finished: bool = False
