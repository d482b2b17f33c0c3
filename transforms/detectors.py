"""Stateful detectors with timers.

:class:`ThresholdAlerts` turns windowed statistic rows into *alerts*: one
``RAISED`` record when a metric crosses its threshold and one ``RECOVERED``
record when it falls back below the recovery level (hysteresis), not one record
per window while the breach lasts.

Rows are evaluated per key in event-time order of their windows: each row is
buffered in state and an event-time timer at the window's end releases the
buffer in order once the watermark has passed, so a batch replay (where rows
arrive in any order) gives the same alerts as the live stream.  EARLY panes are
not evaluated (they are speculative); of the later panes of a window only the
first is (a LATE correction of a window already evaluated is counted as
``alerts.stale_panes`` and does not reopen or close an alert).
"""
import itertools
import pickle
import typing

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer

RAISED = 'RAISED'
RECOVERED = 'RECOVERED'


class Rule(typing.NamedTuple):
    """Alert when ``row.<metric>`` > threshold; recover below
    ``threshold * (1 - hysteresis)``.  Rows whose ``count_field`` (``count``
    unless named) is below ``min_count`` are not evaluated (too few records
    to judge)."""
    metric: str
    threshold: float
    hysteresis: float = 0.2
    min_count: int = 0
    count_field: str = 'count'

    @property
    def recover_below(self) -> float:
        return self.threshold * (1.0 - self.hysteresis)


class Alert(typing.NamedTuple):
    """One row of an ``alerts`` table."""
    key: str                  # what the statistics are per (e.g. the service)
    metric: str               # the row field that crossed its threshold
    state: str                # RAISED | RECOVERED
    value: float              # the metric's value in that window
    threshold: float          # the threshold (RAISED) or recovery level
    window_start: Timestamp   # the window whose statistics changed the state
    window_end: Timestamp
    pane_timing: str          # of the statistics pane that was evaluated
    pane_index: int

    # One alert per key, metric, state change and window (file names hash these).
    IDENTITY_FIELDS = ('key', 'metric', 'state', 'window_start', 'window_end',
                       'pane_index')


beam.coders.registry.register_coder(Alert, beam.coders.RowCoder)


class _ThresholdFn(beam.DoFn):
    PENDING = BagStateSpec('pending', PickleCoder())
    STATUS = ReadModifyWriteStateSpec('status', PickleCoder())
    FLUSH = TimerSpec('flush', TimeDomain.WATERMARK)

    def __init__(self, rules, job):
        self._rules = tuple(rules)
        self._raised = Metrics.counter(job, 'alerts.raised')
        self._recovered = Metrics.counter(job, 'alerts.recovered')
        self._stale = Metrics.counter(job, 'alerts.stale_panes')
        self._speculative = Metrics.counter(job, 'alerts.early_panes_skipped')

    def process(self, kv, timestamp=beam.DoFn.TimestampParam,
                pending=beam.DoFn.StateParam(PENDING),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, row = kv
        if row.pane_timing == 'EARLY':
            self._speculative.inc()
            return
        pending.add(row)
        flush.set(row.window_end)

    @on_timer(FLUSH)
    def release(self, key=beam.DoFn.KeyParam,
                fired=beam.DoFn.TimestampParam,
                pending=beam.DoFn.StateParam(PENDING),
                status=beam.DoFn.StateParam(STATUS)):
        rows = list(pending.read())
        pending.clear()
        last_end, breached = status.read() or (None, {})
        last_end = yield from self._judge(key, rows, last_end, breached)
        status.write((last_end, breached))

    def _judge(self, key, rows, last_end, breached):
        """Evaluates ``rows`` in the order of their windows; yields the
        alerts and returns the last window end evaluated (``breached`` is
        updated in place)."""
        rows = sorted(rows, key=lambda r: (r.window_end, r.window_start,
                                           r.pane_index))
        for row in rows:
            if last_end is not None and row.window_end <= last_end:
                self._stale.inc()
                continue
            last_end = row.window_end
            for rule in self._rules:
                value = getattr(row, rule.metric)
                if value is None or getattr(row, rule.count_field, 0) < rule.min_count:
                    continue
                if not breached.get(rule.metric) and value > rule.threshold:
                    breached[rule.metric] = True
                    self._raised.inc()
                    yield self._alert(key, rule, RAISED, value,
                                      rule.threshold, row)
                elif breached.get(rule.metric) and value < rule.recover_below:
                    breached[rule.metric] = False
                    self._recovered.inc()
                    yield self._alert(key, rule, RECOVERED, value,
                                      rule.recover_below, row)
        return last_end

    @staticmethod
    def _alert(key, rule, state, value, threshold, row):
        alert = Alert(
            key=str(key), metric=rule.metric, state=state, value=float(value),
            threshold=float(threshold), window_start=row.window_start,
            window_end=row.window_end, pane_timing=row.pane_timing,
            pane_index=row.pane_index)
        # Emitted at the timer's timestamp (the latest released window end),
        # which the runner's watermark hold covers.
        return alert


class _BoundedThresholdFn(_ThresholdFn):
    """The same evaluation for bounded input: a key's rows, all at once
    (grouped), in the order of their windows, which is the order the
    timers release them in once the watermark passes them all."""

    def __init__(self, rules, job, batched=False):
        super().__init__(rules, job)
        self._batched = batched

    def process(self, kv):  # pylint: disable=arguments-differ
        key, rows = kv
        if self._batched:
            rows = itertools.chain.from_iterable(map(pickle.loads, rows))
        kept = []
        for row in rows:
            if row.pane_timing == 'EARLY':
                self._speculative.inc()
            else:
                kept.append(row)
        yield from self._judge(key, kept, None, {})


def _by_key(batch, key_fn):
    """A list of rows (or the list pickled) -> (key, the rows of that key,
    pickled), one per key.

    (Pickled once here: through the shuffle Beam's coder would pickle each
    row of an untyped list on its own, twice with its size estimate.)"""
    if isinstance(batch, bytes):
        batch = pickle.loads(batch)
    keyed = {}
    for row in batch:
        keyed.setdefault(str(key_fn(row)), []).append(row)
    return [(key, pickle.dumps(rows, pickle.HIGHEST_PROTOCOL))
            for key, rows in keyed.items()]


class ThresholdAlerts(beam.PTransform):
    """``PCollection[Row]`` (windowed statistics with pane fields) ->
    ``PCollection[Alert]`` (global window, timestamped at the end of the
    window whose release emitted them).

    ``key_fn(row)`` names what the statistics are per; ``rules`` are
    :class:`Rule` s over the row's numeric fields."""

    def __init__(self, key_fn, rules, job, bounded=False, batched=False,
                 label=None):
        super().__init__(label)
        self._key_fn = key_fn
        self._rules = rules
        self._job = job
        # bounded: a batch run, where every row of a key is there at once;
        # a key's rows are grouped and judged together (no state, no
        # timers: the local runner's state cache measures every row it
        # holds, object by object).
        self._bounded = bounded
        # batched (bounded only): each element is a list of rows (or the
        # list pickled, bytes), keyed
        # and shuffled as one (key, rows) element per key in it, not one
        # element per row (Python Beam pays per element at every step).
        if batched and not bounded:
            raise ValueError('ThresholdAlerts: batched needs bounded')
        self._batched = batched

    def expand(self, rows):
        if self._batched:
            return (rows
                    | 'KeyBatches' >> beam.FlatMap(
                        _by_key, self._key_fn).with_output_types(
                            typing.Tuple[str, bytes])
                    | 'GlobalWindow' >> beam.WindowInto(
                        beam_window.GlobalWindows())
                    | 'GroupKey' >> beam.GroupByKey()
                    | 'Detect' >> beam.ParDo(_BoundedThresholdFn(
                        self._rules, self._job, batched=True)))
        keyed = (rows
                 | 'KeyRows' >> beam.Map(lambda row, f: (str(f(row)), row),
                                         self._key_fn).with_output_types(
                                             typing.Tuple[str, typing.Any])
                 | 'GlobalWindow' >> beam.WindowInto(
                     beam_window.GlobalWindows()))
        if self._bounded:
            return (keyed
                    | 'GroupKey' >> beam.GroupByKey()
                    | 'Detect' >> beam.ParDo(_BoundedThresholdFn(
                        self._rules, self._job)))
        return keyed | 'Detect' >> beam.ParDo(
            _ThresholdFn(self._rules, self._job))
