"""Windowed per-key aggregation whose every output row says which pane it is.

:class:`AggregatePerKey` is ``CombinePerKey`` plus two things every job needs:

* each result becomes a typed row carrying ``window_start``, ``window_end``,
  ``pane_timing`` and ``pane_index`` (see :func:`transforms.windows.pane_fields`);
* an exact account of records: ``assigned`` counts record-window assignments
  entering the combine, ``aggregated`` counts those that reached an output pane
  (``late_accepted`` those first seen in a LATE pane).  Beam drops records that
  arrive after the allowed lateness without a trace; their number is
  ``assigned - aggregated`` once the pipeline has finished, and the job summary
  reports it as *dropped late*.

Counting what a pane added needs the count the previous pane of the same key
and window carried (in accumulating mode each pane repeats the earlier ones), so
the annotation is a small stateful DoFn keyed by (key, window).
"""
import apache_beam as beam
from apache_beam import typehints
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms import windows


class _CountAssignments(beam.DoFn):
    """Passes (key, value) through once per window, counting assignments
    (a partial aggregate counts as the records it holds)."""

    def __init__(self, job, count_of):
        self._assigned = Metrics.counter(job, 'assigned')
        self._count_of = count_of

    def process(self, kv, window=beam.DoFn.WindowParam):
        self._assigned.inc(self._count_of(kv[1]))
        yield kv


class _PaneRows(beam.DoFn):
    """(key, result) -> row with window and pane fields; accounts for records."""
    COUNTED = ReadModifyWriteStateSpec('counted', VarIntCoder())

    def __init__(self, make_row, count_of, accumulating, job):
        self._make_row = make_row
        self._count_of = count_of
        self._accumulating = accumulating
        self._aggregated = Metrics.counter(job, 'aggregated')
        self._late = Metrics.counter(job, 'late_accepted')
        self._panes = {
            timing: Metrics.counter(job, f'panes.{name}')
            for timing, name in windows.TIMING_NAMES.items()
        }

    def process(self, kv, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam,
                counted=beam.DoFn.StateParam(COUNTED)):
        key, result = kv
        count = self._count_of(result)
        if self._accumulating:
            before = counted.read() or 0
            counted.write(count)
            added = count - before
        else:
            added = count
        self._aggregated.inc(added)
        if pane.timing == PaneInfoTiming.LATE:
            self._late.inc(added)
        self._panes[pane.timing].inc()
        yield self._make_row(key, result, windows.pane_fields(window, pane))


class AggregatePerKey(beam.PTransform):
    """``PCollection[(K, V)]`` (windowed, triggered) -> ``PCollection[Row]``.

    ``combine_fn`` combines the values of a key and window; ``make_row(key,
    result, pane_fields)`` builds the output row; ``count_of(x)`` is the
    number of input records a result, an input record (1) or an input partial
    aggregate (columnar fast path) covers.  ``accumulating`` must match the
    trigger's accumulation mode.
    """

    def __init__(self, combine_fn, make_row, count_of, accumulating, job,
                 key_type=str, label=None):
        super().__init__(label)
        self._key_type = key_type
        self._combine_fn = combine_fn
        self._make_row = make_row
        self._count_of = count_of
        self._accumulating = accumulating
        self._job = job

    def expand(self, kvs):
        combined = (kvs
                    | 'CountAssigned' >> beam.ParDo(
                        _CountAssignments(self._job, self._count_of))
                    | 'Combine' >> beam.CombinePerKey(self._combine_fn))
        # The key type lets Beam pick a deterministic key coder for the state.
        combined.element_type = typehints.Tuple[self._key_type, typehints.Any]
        return combined | 'ToRows' >> beam.ParDo(_PaneRows(
            self._make_row, self._count_of, self._accumulating, self._job))
