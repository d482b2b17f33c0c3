"""Windowed per-key aggregation whose every output row says which pane it is.

:class:`AggregatePerKey` is ``CombinePerKey`` plus two things every job needs:

* each result becomes a typed row carrying ``window_start``, ``window_end``,
  ``pane_timing`` and ``pane_index`` (see :func:`transforms.windows.pane_fields`);
* an exact account of records: ``assigned`` counts record-window assignments
  entering the combine, ``aggregated`` counts those that reached an output pane
  (``late_accepted`` those first seen in a LATE pane) and ``late_kept`` those
  that arrived after the allowed lateness.  Beam drops such records inside the
  GroupByKey; with ``keep_late`` the grouping step is one the local runner
  keeps them in (:data:`transforms.windows.KEEP_LATE_LABEL`), decided where
  and when Beam decides, and they become dead letters (stage ``window.late``)
  in :attr:`AggregatePerKey.late`.  ``assigned = aggregated + late_kept``;
  what a runner drops without a trace is ``assigned - aggregated -
  late_kept``, the job summary's *dropped late*.

Counting what a pane added needs the count the previous pane of the same key
and window carried (in accumulating mode each pane repeats the earlier ones), so
the annotation is a small stateful DoFn keyed by (key, window).
"""
import apache_beam as beam
from apache_beam import typehints
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import GlobalWindows, IntervalWindow
from apache_beam.utils import windowed_value
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms import deadletter, windows

LATE_STAGE = 'window.late'
LATE = 'late'


class _CountAssignments(beam.DoFn):
    """Passes (key, value) through once per window, counting assignments
    (a partial aggregate counts as the records it holds)."""

    def __init__(self, job, count_of):
        self._assigned = Metrics.counter(job, 'assigned')
        self._count_of = count_of

    def process(self, kv, window=beam.DoFn.WindowParam):
        self._assigned.inc(self._count_of(kv[1]))
        yield kv


class _CountCarried(_CountAssignments):
    """The same where each value is a (value, raw payload) pair: it leaves as a ``windows.WithRaw``, which the grouping that keeps late
    records strips of its payload unless it is late.

    ``output`` (a name): a value whose origin says that the sink holds its
    late dead letter for this output and key (a restart: the record was
    late here before the kill, and that dead letter is its only output
    here) does not enter the grouping again; counted ``late_replayed``.
    ``per_window``: the output is one window of the grouping (sliding
    windows: a record in several windows may be late for some of them
    only), named ``OUTPUT@END`` (:func:`output_name`).

    A value whose origin carries ``final_by`` (a record a restart reads
    again that the killed run had handed on before the horizon it resumes:
    ``deadletter.Origin``) does not enter the grouping of a window closing
    (its end plus ``lateness``, as ``io.Context.final_at`` computes it) at
    or before it: that window's final pane is written with the record in
    it, or its late dead letter is; counted ``final_replayed`` by the
    records it holds.  Not for merging windows (``merging``: a session
    the record was assigned to is not the one it closes in)."""

    def __init__(self, job, count_of, output=None, per_window=False,
                 lateness=0.0, merging=False):
        super().__init__(job, count_of)
        self._output = output
        self._per_window = per_window
        self._lateness = lateness or 0.0
        self._merging = merging
        self._replayed = Metrics.counter(job, 'late_replayed')
        self._final_replayed = Metrics.counter(job, 'final_replayed')

    def process(self, kv, window=beam.DoFn.WindowParam):
        key, carried = kv
        if not isinstance(carried, windows.WithRaw):
            carried = windows.WithRaw(*carried)
            kv = key, carried
        origin = deadletter.origin_of(carried.raw)
        if origin is not None and origin.written and self._output and \
                deadletter.output_tag(output_name(
                    self._output, window, self._per_window),
                    key) in origin.written:
            self._replayed.inc(self._count_of(carried.value))
            return
        if kept_out(origin, window, self._lateness, self._merging):
            self._final_replayed.inc(self._count_of(carried.value))
            return
        self._assigned.inc(self._count_of(carried.value))
        yield kv


def closes_at(window, lateness) -> float:
    """When ``window`` takes its last record (event time, seconds): its
    end plus the allowed lateness, the same float
    ``transforms.windows.WindowSpec.closes_at`` gives (a commit's horizon
    is compared with it)."""
    return int(window.end.micros) / 1e6 + lateness


def kept_out(origin, window, lateness, merging: bool = False) -> bool:
    """The keep-out rule, the one place that decides it: a record whose
    ``origin`` (``deadletter.Origin``) carries ``final_by`` (a restart read
    it again; the killed run had handed it on before the horizon the
    restart resumes) does not enter a ``window`` closing (its end plus
    ``lateness``: :func:`closes_at`) at or before that horizon: that
    window's final pane was written with the record in it, or its late
    dead letter was.
    Never for merging windows (a session the record was assigned to is
    not the one it closes in).  Applied where each record meets the
    grouping (:class:`_CountCarried`), or where the columnar path builds
    its partials (``columnar.PartialsFn(keep_out=...)``), counted
    ``final_replayed`` in both."""
    return origin is not None and origin.final_by is not None and \
        not merging and closes_at(window, lateness) <= origin.final_by


def output_name(output, window, per_window):
    """The output a late dead letter names: the grouping ``output``, or,
    ``per_window``, that grouping's window ``window``
    (``OUTPUT@END``, its end in microseconds since the epoch)."""
    if not per_window:
        return output
    return f'{output}@{int(window.end.micros)}'


def per_window_late_from(context, source, window, trigger, also=()):
    """Where a job's late dead letters of a grouping in ``window`` windows
    must name their window (``AggregatePerKey(late_output=...,
    late_per_window=True)``), the ``io.Context.late_from`` its source gets
    (``windows.LateFrom``); else None.

    That is where late records are kept (``context.keeps_late``), the
    windows slide (a record in several windows may be late for some of
    them and in the others: a restart must keep it out of just those
    whose letters the sink holds) and a run resumes the ``source`` URI
    after a kill (``io.resumes``).  The job then binds each record to its
    origin (``deadletter.BindOrigins``) and hands it one by one to the
    grouping (not as columnar partials, which carry no origin); a file or
    synthetic stream, which no restart resumes, keeps its path.  The same
    wiring for every job (logs, trades, sensors; video_qoe's rollups carry
    their origins anyway).

    ``also``: other windowings the same records are in (trades: its price
    anomaly window).  A record's commit waits for all of them while its
    ``window`` may be final already, so a restart may read it again into
    a final window whether or not the windows slide: the source then gets
    a ``late_from`` over every windowing wherever late records are kept
    and a restart resumes the source (the job keeps such a record out of
    its final windows, ``kept_out``)."""
    from transforms import io  # pylint: disable=import-outside-toplevel
    if not context.keeps_late or not io.resumes(source) or \
            (window.kind != 'sliding' and not also):
        return None
    return windows.LateFrom((window, *also), trigger)


class _CountKeyed(_CountAssignments):
    """The same where the window travels in the key (bounded input, global
    window): one assignment per element, so no WindowParam, which would make
    Beam invoke the DoFn per window with its arguments rebuilt each time."""

    def process(self, kv):  # pylint: disable=arguments-differ
        self._assigned.inc(self._count_of(kv[1]))
        yield kv


def _as_json(value) -> bytes:
    """A decoded record (or partial aggregate) as one JSON object."""
    import base64  # pylint: disable=import-outside-toplevel
    import orjson  # pylint: disable=import-outside-toplevel

    def plain(x):
        if isinstance(x, Timestamp):
            return windows.to_datetime(x).isoformat().replace('+00:00', 'Z')
        if hasattr(x, '_asdict'):
            return x._asdict()
        if isinstance(x, (bytes, bytearray, memoryview)):
            # (a serialised sketch)
            return base64.b64encode(bytes(x)).decode('ascii')
        if hasattr(x, 'tolist'):
            return x.tolist()
        # An accumulator (a columnar partial): its fields by name, with
        # its type, not an object's repr.
        names = [name for cls in type(x).__mro__
                 for name in getattr(cls, '__slots__', ())
                 if not name.startswith('__')]
        if names or hasattr(x, '__dict__'):
            fields = {name: getattr(x, name) for name in names
                      if hasattr(x, name)}
            fields.update(getattr(x, '__dict__', {}))
            return {'type': type(x).__name__, **fields}
        return repr(x)
    if hasattr(value, '_asdict'):
        value = value._asdict()
    return orjson.dumps(value, default=plain,
                        option=orjson.OPT_NON_STR_KEYS)


class _SplitLate(beam.DoFn):
    """(key, values) groups pass on; (key, LateRecords) become dead letters,
    one per value, counted ``late_kept`` by the records they hold."""

    def __init__(self, job, count_of, lateness, carries_raw=False,
                 source='', output=None, per_window=False):
        self._count_of = count_of
        # (with ``output``) late dead letters name their window too
        # (output_name): a record in several windows (sliding) may be late
        # for some of them only
        self._per_window = per_window
        # ``output``: the name late dead letters give their output (with
        # the key) after the origin their value carries
        # (deadletter.output_source); None: a registered payload names its
        # message (deadletter.dead_letter)
        self._output = output
        # the source URI a late record's dead letter names; with it, the
        # dead letter of a payload a local read registered
        # (deadletter.register_origin) names the message or record too
        self._source = source
        self._lateness = lateness
        # values are windows.WithRaw: a late one's dead letters hold its
        # payloads (the grouping step stripped the others of theirs)
        self._carries_raw = carries_raw
        self._kept = Metrics.counter(job, 'late_kept')
        # dead letters made here (one per late record where the payloads
        # travel; else one per late value, a partial of several records
        # being one), beside the decoders' ``dead_letters``
        self._letters = Metrics.counter(job, 'late_dead_letters')

    def process(self, kv, window=beam.DoFn.WindowParam):
        key, values = kv
        if not isinstance(values, windows.LateRecords):
            if self._carries_raw:
                # (only where the grouping step did not strip the payloads:
                # a runner without the local runner's late-record driver)
                yield key, [v.value if isinstance(v, windows.WithRaw) else v
                            for v in values]
            else:
                yield kv
            return
        span = (f'[{windows.to_datetime(window.start).isoformat()}, '
                f'{windows.to_datetime(window.end).isoformat()})')
        allowed = ('allowed lateness '
                   f'{windows.format_duration(self._lateness)}'
                   if self._lateness else 'no allowed lateness')
        if values.finished:
            why = ('arrived after it closed: its trigger had fired '
                   f'its final pane ({allowed})')
        else:
            why = (f'arrived {values.seconds_late:.3f} s after it closed '
                   f'({allowed})')
        for value in values.values:
            origin = None
            if isinstance(value, windows.WithRaw):
                value, raw = value
                if isinstance(raw, deadletter.Sourced):
                    raw, origin = raw
                records = self._count_of(value)
                payloads = _payloads(raw)
                if payloads is not None and len(payloads) == records:
                    # one dead letter per record, with its own payload
                    self._kept.inc(records)
                    for payload in payloads:
                        yield self._letter(payload, 1, key, span, why)
                    continue
                if payloads is not None or raw is None:
                    # (a partial whose payloads do not match its count:
                    # kept as JSON by its fields, never silently; or a
                    # value that carries its origin alone)
                    raw = _as_json(value)
            else:
                raw = _as_json(value)
                records = self._count_of(value)
            self._kept.inc(records)
            yield self._letter(raw, records, key, span, why, origin, window)

    def _letter(self, raw, records, key, span, why, origin=None,
                window=None):
        self._letters.inc()
        reason = f'{records} record(s) of {key!r} for window {span} {why}'
        if self._output is not None:
            return beam.pvalue.TaggedOutput(LATE, deadletter.dead_letter(
                raw, LATE_STAGE, reason, deadletter.output_source(
                    self._source, origin, output_name(
                        self._output, window, self._per_window), key),
                claim=False))
        return beam.pvalue.TaggedOutput(LATE, deadletter.dead_letter(
            raw, LATE_STAGE, reason, self._source))


def _payloads(raw):
    """The payloads a carried ``raw`` holds, one per record (a list), or
    None where it is a single record's payload."""
    if raw is None or isinstance(raw, (bytes, bytearray, memoryview, str)):
        return None
    return raw.to_pylist() if hasattr(raw, 'to_pylist') else list(raw)


class _PaneRows(beam.DoFn):
    """(key, result) -> row with window and pane fields; accounts for records.

    Each pane adds what it holds, which is everything when panes do not
    accumulate or when a window has only one pane."""

    def __init__(self, make_row, count_of, job):
        self._make_row = make_row
        self._count_of = count_of
        self._aggregated = Metrics.counter(job, 'aggregated')
        self._late = Metrics.counter(job, 'late_accepted')
        self._panes = {
            timing: Metrics.counter(job, f'panes.{name}')
            for timing, name in windows.TIMING_NAMES.items()
        }

    def _account(self, added, pane):
        self._aggregated.inc(added)
        if pane.timing == PaneInfoTiming.LATE:
            self._late.inc(added)
        self._panes[pane.timing].inc()

    def process(self, kv, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        key, result = kv
        self._account(self._count_of(result), pane)
        yield self._make_row(key, result, windows.pane_fields(window, pane))


class _AccumulatingPaneRows(_PaneRows):
    """The same where panes accumulate: a pane adds what it holds beyond the
    previous pane of its key and window, kept in state."""
    COUNTED = ReadModifyWriteStateSpec('counted', VarIntCoder())

    def process(self, kv, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam,
                counted=beam.DoFn.StateParam(COUNTED)):
        key, result = kv
        count = self._count_of(result)
        before = counted.read() or 0
        counted.write(count)
        self._account(count - before, pane)
        yield self._make_row(key, result, windows.pane_fields(window, pane))


class _WithWindow(beam.DoFn):
    """(key, result) -> (key, (result, window start, window end, pane)), so
    that the window and pane survive re-windowing into the global window."""

    def process(self, kv, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        key, result = kv
        yield key, (result, window.start, window.end, pane)


class _MergingPaneRows(_PaneRows):
    """Panes of merging windows (sessions) that accumulate, in the global
    window: a session window grows as its windows merge, so what a pane adds
    is what it holds beyond the earlier panes of every window it absorbed
    (kept in state per key as window -> count)."""
    COUNTED = ReadModifyWriteStateSpec('counted', PickleCoder())

    def process(self, kv, counted=beam.DoFn.StateParam(COUNTED)):
        key, (result, start, end, pane) = kv
        count = self._count_of(result)
        seen = counted.read() or {}
        absorbed = [w for w in seen if w[0] < end and start < w[1]]
        before = sum(seen.pop(w) for w in absorbed)
        seen[(start, end)] = count
        counted.write(seen)
        self._account(count - before, pane)
        window = IntervalWindow(start, end)
        yield self._make_row(key, result, windows.pane_fields(window, pane))


class _BoundedPaneRows(_PaneRows):
    """((key, start us, end us), result) in the global window -> the row Beam
    gives a window of bounded input: its only pane, ON_TIME, index 0."""
    ONLY_PANE = windowed_value.PaneInfo(
        is_first=True, is_last=True, timing=PaneInfoTiming.ON_TIME, index=0,
        nonspeculative_index=0)

    # Pane fields kept per window: a bounded run has few windows and many
    # keys, and the fields (Timestamps, a dict) are never modified.
    _MAX_CACHED = 4096

    def setup(self):
        self._fields = {}

    def process(self, kv):
        (key, start, end), result = kv
        self._account(self._count_of(result), self.ONLY_PANE)
        fields = self._fields.get((start, end))
        if fields is None:
            if len(self._fields) >= self._MAX_CACHED:
                self._fields.clear()
            window = IntervalWindow(Timestamp(micros=start),
                                    Timestamp(micros=end))
            fields = self._fields[(start, end)] = windows.pane_fields(
                window, self.ONLY_PANE)
        yield self._make_row(key, result, fields)


class AggregatePerKey(beam.PTransform):
    """``PCollection[(K, V)]`` (windowed, triggered) -> ``PCollection[Row]``.

    ``combine_fn`` combines the values of a key and window; ``make_row(key,
    result, pane_fields)`` builds the output row; ``count_of(x)`` is the
    number of input records a result, an input record (1) or an input partial
    aggregate (columnar fast path) covers.

    ``window_in_key``: for bounded input only.  The elements are ``((key,
    window start us, window end us), value)`` in the global window, as the
    columnar path emits them in a batch run: a window of bounded input has
    exactly one pane (ON_TIME), and grouping by (key, window) in the global
    window skips Beam's per-window trigger machinery, which costs about a
    third of a millisecond per key and window.  ``accumulating`` is true when a
    window can have several panes that accumulate (state is kept then).
    ``merging``: the windows merge (sessions); accumulated panes are then
    accounted per key across the windows a pane's window absorbed, and the
    rows leave in the global window (their fields say their window).

    ``carries_raw`` (with ``keep_late`` only): each value is a ``(value,
    raw)`` pair or a ``windows.WithRaw``: ``raw`` is the payload a record
    was read from (``Decode(with_raw=True)``) or the payloads of the
    records a partial covers, one each (``columnar.PartialsFn(carry_raw=
    True)``).  The grouping step keeps the value alone unless it is late;
    the combine sees the values alone, and a late value makes one dead
    letter per record, holding that record's payload as it was read,
    instead of the value as JSON.  ``source`` (with ``carries_raw``): the
    source URI those dead letters name; a payload a local read registered
    (``deadletter.register_origin``: a Pub/Sub message that may be late)
    names its message after it, so that a restart does not write it again.

    ``late_output`` (with ``carries_raw``): a name for this grouping, where
    a record has several outputs that may each be late (video_qoe: its
    session and its rollups).  Values then may carry the record's origin
    (``windows.WithRaw(value, deadletter.Sourced(raw, origin))``, ``raw``
    None for a value kept as JSON); a late dead letter names it with this output and the key
    (``URI#message=ID&window=NAME&key=K``), and a value whose origin says
    the sink holds that dead letter (a restart) does not enter the grouping
    again.
    ``late_per_window`` (with ``late_output``): the letters name the
    grouping's window too (``window=NAME@END&key=K``): a record in several
    sliding windows may be late for some and in the others.
    """

    def __init__(self, combine_fn, make_row, count_of, accumulating, job,
                 key_type=str, window_in_key=False, merging=False,
                 keep_late=None, carries_raw=False, source='', late_output=None,
                 late_per_window=False, label=None):
        super().__init__(label)
        if carries_raw and (keep_late is None or window_in_key):
            raise ValueError('carries_raw needs keep_late on windowed input')
        self._carries_raw = carries_raw
        # (with carries_raw) the source URI late dead letters name
        self._source = source if carries_raw else ''
        self._late_output = late_output if carries_raw else None
        self._late_per_window = late_per_window
        self._merging = merging
        # keep_late: the allowed lateness (seconds) of a streaming input,
        # whose later records become dead letters in ``self.late``; None
        # where nothing can be late (bounded input).
        self._keep_late = keep_late
        self.late = None
        self._window_in_key = window_in_key
        self._key_type = key_type
        self._combine_fn = combine_fn
        self._make_row = make_row
        self._count_of = count_of
        self._accumulating = accumulating
        self._job = job

    def expand(self, kvs):
        if self._window_in_key:
            count = _CountKeyed(self._job, self._count_of)
        elif self._carries_raw:
            count = _CountCarried(self._job, self._count_of,
                                  self._late_output, self._late_per_window,
                                  self._keep_late, self._merging)
        else:
            count = _CountAssignments(self._job, self._count_of)
        assigned = kvs | 'CountAssigned' >> beam.ParDo(count)
        if self._keep_late is not None and not self._window_in_key:
            split = (assigned
                     | windows.KEEP_LATE_LABEL >> beam.GroupByKey()
                     | 'SplitLate' >> beam.ParDo(_SplitLate(
                         self._job, self._count_of, self._keep_late,
                         self._carries_raw, self._source,
                         self._late_output, self._late_per_window))
                     .with_outputs(LATE, main='groups'))
            # Dead letters travel in the global window, as the decoders'
            # do: the job flattens both into one dead-letter table.
            self.late = split[LATE] | 'LateToGlobal' >> beam.WindowInto(
                GlobalWindows())
            groups = split.groups
            groups.element_type = typehints.Tuple[
                self._key_type, typehints.Iterable[typehints.Any]]
            combined = groups | 'Combine' >> beam.CombineValues(
                self._combine_fn)
        else:
            combined = assigned | 'Combine' >> beam.CombinePerKey(
                self._combine_fn)
        if self._window_in_key:
            return combined | 'ToRows' >> beam.ParDo(_BoundedPaneRows(
                self._make_row, self._count_of, self._job))
        # The key type lets Beam pick a deterministic key coder for the state.
        combined.element_type = typehints.Tuple[self._key_type, typehints.Any]
        if self._merging and self._accumulating:
            return (combined
                    | 'WithWindow' >> beam.ParDo(_WithWindow())
                    .with_output_types(typehints.Tuple[self._key_type,
                                                       typehints.Any])
                    | 'GlobalWindow' >> beam.WindowInto(GlobalWindows())
                    | 'ToRows' >> beam.ParDo(_MergingPaneRows(
                        self._make_row, self._count_of, self._job)))
        rows_fn = _AccumulatingPaneRows if self._accumulating else _PaneRows
        return combined | 'ToRows' >> beam.ParDo(rows_fn(
            self._make_row, self._count_of, self._job))
