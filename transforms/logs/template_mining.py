"""Log templates in a stream: mining per service, windowed template counts and
template alerts.

* :class:`MineTemplates` -- ``(service, LogRecord)`` in the global window ->
  :class:`TemplateHit` per record (its template as mined so far, at the
  record's event time) and, tagged ``alerts``, :class:`TemplateAlert` s of
  kind ``new_template`` (a template reaches ``min_count`` records) and
  ``template_changed`` (an announced template generalises: its id changes).
  A stateful DoFn keyed by service holds one
  :class:`~transforms.logs.templates.TemplateMiner` per service.
* :func:`template_stats_row` and :class:`TemplateStatsFn` -- the ``templates``
  table: per template and window, count, first/last seen and one (masked)
  example.
* :class:`TemplateRateAlerts` -- ``templates`` rows -> ``rate_jump`` /
  ``rate_drop`` alerts when a template's count in a window is beyond
  ``factor`` times (or below 1/``factor`` of) its exponentially weighted
  moving average over the service's earlier windows.
"""
import pickle
import typing

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec,
                                              ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from transforms.logs import templates

NEW_TEMPLATE = 'new_template'
TEMPLATE_CHANGED = 'template_changed'
RATE_JUMP = 'rate_jump'
RATE_DROP = 'rate_drop'
ALERTS = 'alerts'

DEFAULT_MIN_COUNT = 10
DEFAULT_RATE_FACTOR = 4.0
DEFAULT_EWMA_ALPHA = 0.3
DEFAULT_WARMUP_WINDOWS = 5
DEFAULT_RATE_MIN_COUNT = 5


class TemplateHit(typing.NamedTuple):
    """One record's template as mined when it was read."""
    service: str
    template_id: str
    template: str
    event_time: Timestamp
    message: str                      # the record's (masked) message


class TemplateAlert(typing.NamedTuple):
    """One row of the ``template_alerts`` table."""
    service: str
    template_id: str
    template: str
    kind: str               # new_template | template_changed | rate_jump | rate_drop
    previous_id: str        # template_changed: the id before it generalised
    count: int              # new_template: records so far; rate_*: in the window
    expected: float         # new_template: the min count; rate_*: the EWMA
    time: Timestamp         # event time of the record, or the window's end
    window_start: typing.Optional[Timestamp]  # rate_*: the window
    window_end: typing.Optional[Timestamp]

    IDENTITY_FIELDS = ('service', 'template_id', 'kind', 'time')


class TemplateStats(typing.NamedTuple):
    """One row of the ``templates`` table."""
    service: str
    template_id: str                  # 16 hex digits, from service and text
    template: str                     # tokens with variables as <*>
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str
    pane_index: int
    count: int                        # records of the template in the window
    first_seen: Timestamp             # event time of its first record there
    last_seen: Timestamp
    example: str                      # the first record's (masked) message

    IDENTITY_FIELDS = ('service', 'template_id', 'window_start', 'window_end',
                       'pane_timing', 'pane_index')


for _type in (TemplateHit, TemplateAlert, TemplateStats):
    beam.coders.registry.register_coder(_type, beam.coders.RowCoder)


class _MineFn(beam.DoFn):
    """Keyed by service.  The miner lives in state, rewritten whenever its
    templates change or a record of a template not yet announced arrives
    (at most ``min_count`` per template: rare once a stream has warmed up),
    and in a per-instance cache validated by a version number, so that a
    record of a known template costs one small state read, not a miner's
    unpickling.  (Sizes of announced templates are not kept in state: the
    ``count`` of a ``template_changed`` alert counts records since the last
    state write, a lower bound after a restart.)"""
    MINER = ReadModifyWriteStateSpec('miner', BytesCoder())
    VERSION = ReadModifyWriteStateSpec('version', VarIntCoder())

    def __init__(self, min_count, job):
        self._min_count = min_count
        self._templates = Metrics.counter(job, 'templates.new')
        self._changed = Metrics.counter(job, 'templates.changed')
        self._cache = {}

    def setup(self):
        self._cache = {}

    def process(self, kv, timestamp=beam.DoFn.TimestampParam,
                miner_state=beam.DoFn.StateParam(MINER),
                version_state=beam.DoFn.StateParam(VERSION)):
        service, record = kv
        version = version_state.read() or 0
        cached = self._cache.get(service)
        if cached is not None and cached[0] == version:
            miner, announced = cached[1]
        else:
            stored = miner_state.read()
            miner, announced = pickle.loads(stored) if stored else (
                templates.TemplateMiner(service), {})
        match = miner.add(record.message)
        cluster = miner.last_cluster
        dirty = False
        if match.is_new:
            self._templates.inc()
            dirty = True
        key = cluster.number
        if match.previous_id is not None:
            dirty = True
            if match.previous_id in announced.values():
                self._changed.inc()
                yield beam.pvalue.TaggedOutput(ALERTS, TemplateAlert(
                    service, match.template_id, match.template,
                    TEMPLATE_CHANGED, match.previous_id, cluster.size,
                    float(self._min_count), timestamp, None, None))
        if key not in announced:
            # Its size decides the announcement: kept in state until then.
            dirty = True
        if cluster.size >= self._min_count and \
                announced.get(key) != match.template_id:
            if key not in announced:
                yield beam.pvalue.TaggedOutput(ALERTS, TemplateAlert(
                    service, match.template_id, match.template, NEW_TEMPLATE,
                    '', cluster.size, float(self._min_count), timestamp,
                    None, None))
            announced[key] = match.template_id
            dirty = True
        if dirty:
            version += 1
            miner_state.write(pickle.dumps((miner, announced)))
            version_state.write(version)
        self._cache[service] = (version, (miner, announced))
        yield TemplateHit(service, match.template_id, match.template,
                          timestamp, record.message)


class MineTemplates(beam.PTransform):
    """``PCollection[(service, LogRecord)]`` (event-timestamped, any window:
    mining runs in the global window) -> :class:`TemplateHit` s (main output)
    and :class:`TemplateAlert` s (tag ``alerts``)."""

    def __init__(self, min_count=DEFAULT_MIN_COUNT, job='templates', label=None):
        super().__init__(label)
        self._min_count = min_count
        self._job = job

    def expand(self, keyed):
        return (keyed
                | 'GlobalWindow' >> beam.WindowInto(beam_window.GlobalWindows())
                | 'Mine' >> beam.ParDo(_MineFn(self._min_count, self._job))
                .with_output_types(TemplateHit)
                .with_outputs(ALERTS, main='hits'))


class TemplateAcc(typing.NamedTuple):
    service: str
    template: str
    count: int
    first_seen: Timestamp
    last_seen: Timestamp
    example: str


class TemplateStatsFn(beam.CombineFn):
    """:class:`TemplateHit` s of one template -> :class:`TemplateAcc`; the
    example is the message of the earliest hit (ties: the least message), so
    the result does not depend on the order of inputs."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, hit):
        return self.merge_accumulators([acc, TemplateAcc(
            hit.service, hit.template, 1, hit.event_time, hit.event_time,
            hit.message)])

    def merge_accumulators(self, accs):
        out = None
        for acc in accs:
            if acc is None:
                continue
            if out is None:
                out = acc
                continue
            first, example = min((out.first_seen, out.example),
                                 (acc.first_seen, acc.example))
            out = TemplateAcc(out.service, out.template, out.count + acc.count,
                              first, max(out.last_seen, acc.last_seen), example)
        return out

    def extract_output(self, acc):
        return acc


def template_count(value) -> int:
    """Records a hit (1) or an accumulator covers."""
    return value.count if isinstance(value, TemplateAcc) else 1


def template_stats_row(template_id, acc: TemplateAcc, pane: dict):
    return TemplateStats(
        service=acc.service, template_id=template_id, template=acc.template,
        count=acc.count, first_seen=acc.first_seen, last_seen=acc.last_seen,
        example=acc.example, **pane)


class _RateFn(beam.DoFn):
    """Keyed by service; rows buffered until their window has passed, then
    evaluated in window order (as :mod:`transforms.detectors` does)."""
    PENDING = BagStateSpec('pending', PickleCoder())
    STATUS = ReadModifyWriteStateSpec('status', PickleCoder())
    FLUSH = TimerSpec('flush', TimeDomain.WATERMARK)

    def __init__(self, factor, alpha, warmup, min_count, job):
        self._min_count = min_count
        self._factor = factor
        self._alpha = alpha
        self._warmup = warmup
        self._alerts = Metrics.counter(job, 'templates.rate_alerts')

    def process(self, kv, pending=beam.DoFn.StateParam(PENDING),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, row = kv
        if row.pane_timing == 'EARLY':
            return
        pending.add(row)
        flush.set(row.window_end)

    @on_timer(FLUSH)
    def release(self, key=beam.DoFn.KeyParam,
                pending=beam.DoFn.StateParam(PENDING),
                status=beam.DoFn.StateParam(STATUS)):
        rows = pending.read()
        pending.clear()
        last_end, known = status.read() or (None, {})
        windows = {}
        for row in rows:
            if last_end is not None and row.window_end <= last_end:
                continue               # a later pane of a window already seen
            per = windows.setdefault((row.window_end, row.window_start), {})
            if row.template_id not in per or \
                    row.pane_index < per[row.template_id].pane_index:
                per[row.template_id] = row
        for (end, start), per in sorted(windows.items()):
            last_end = end
            for template_id in sorted(set(known) | set(per)):
                row = per.get(template_id)
                count = row.count if row is not None else 0
                ewma, seen, text, state = known.get(
                    template_id, (None, 0, '', None))
                text = row.template if row is not None else text
                kind = None
                if ewma is not None and seen >= self._warmup:
                    if count >= self._min_count and \
                            count > self._factor * ewma:
                        kind = RATE_JUMP
                    elif ewma >= self._min_count and \
                            count < ewma / self._factor:
                        kind = RATE_DROP
                if kind is not None and kind != state:
                    # Once per excursion: again only after a normal window.
                    self._alerts.inc()
                    yield TemplateAlert(key, template_id, text, kind, '',
                                        count, float(ewma), end, start, end)
                ewma = float(count) if ewma is None else \
                    self._alpha * count + (1 - self._alpha) * ewma
                known[template_id] = (ewma, seen + 1, text, kind)
        status.write((last_end, known))


class TemplateRateAlerts(beam.PTransform):
    """``templates`` rows -> ``rate_jump``/``rate_drop`` :class:`TemplateAlert` s.

    Per service, windows are evaluated in event-time order once the
    watermark has passed them.  A known template absent from a window of its
    service counts 0 there.  A template is judged after ``warmup`` windows of
    history, against the EWMA (weight ``alpha`` for the newest window): a
    jump needs at least ``min_count`` records in the window, a drop an EWMA
    of at least ``min_count`` (sparse templates are not judged).  An alert is
    raised once per excursion: the next needs a window back within the
    factor, or an excursion the other way."""

    def __init__(self, factor=DEFAULT_RATE_FACTOR, alpha=DEFAULT_EWMA_ALPHA,
                 warmup=DEFAULT_WARMUP_WINDOWS,
                 min_count=DEFAULT_RATE_MIN_COUNT, job='templates',
                 label=None):
        super().__init__(label)
        self._args = (factor, alpha, warmup, min_count, job)

    def expand(self, rows):
        return (rows
                | 'KeyByService' >> beam.Map(lambda r: (r.service, r))
                .with_output_types(typing.Tuple[str, TemplateStats])
                | 'GlobalWindow' >> beam.WindowInto(beam_window.GlobalWindows())
                | 'Detect' >> beam.ParDo(_RateFn(*self._args)))
