"""Fixes for Beam's local (bundle-based) DirectRunner, installed before a run.

Counters: each executor thread keeps one state sampler for its whole life, and
the sampler caches the scoped state of a step together with the metrics
container it was first given.  From the second bundle of a step on, counter
updates go to that first, already committed container and are lost: a
streaming run reports only its first bundle's counts.  Giving every bundle a
fresh sampler makes each bundle's counters land in its own container, which
the runner then commits.

Splittable DoFns in streaming mode (the Kafka source): the runner's list of
transform overrides replaces GroupByKey a last time *after* its streaming
overrides, so the GroupByKey that its own splittable-DoFn expansion adds stays
a batch GroupByKey and the pipeline is refused ("was not replaced as
expected").  The streaming overrides are moved after that last replacement.

Splittable DoFns at all: the runner defers the iteration of a splittable
``process()`` until after Beam's invoker has already checked that the
restriction was fully claimed, so every splittable DoFn fails ("is not done
since work in range ... has not been claimed"); and a ``defer_remainder()``
checkpoint is dropped, ending the read.  The check is moved after the outputs
are consumed, and a deferred remainder becomes the runner's residual.  While a
splittable DoFn has work left, the runner holds its output watermark at the
beginning of time (it never reads the watermark estimator back); for a DoFn
that tells its watermark (``local_watermark(element)``, as the Kafka reader
does) the hold follows it, so that windows downstream of an unbounded read
fire as its watermark advances.

All fixes are idempotent and touch nothing else.
"""
import threading

from apache_beam.runners import sdf_utils
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.direct import executor
from apache_beam.runners.direct import sdf_direct_runner
from apache_beam.runners.direct import transform_evaluator
from apache_beam.runners.direct.watermark_manager import WatermarkManager
from apache_beam.utils.timestamp import Timestamp
from apache_beam.runners.worker import statesampler
from apache_beam.utils import counters

_INSTALLED = '_realtime_pipelines_fresh_sampler'


def install():
    _install_fresh_sampler()
    _install_override_order()
    _install_sdf_fix()


_SDF = threading.local()


def _install_sdf_fix():
    tracker_class = sdf_utils.ThreadsafeRestrictionTracker
    invoker_class = sdf_direct_runner.SDFProcessElementInvoker
    if getattr(invoker_class.invoke_process_element, _INSTALLED, False):
        return
    original_init = tracker_class.__init__
    original_check = tracker_class.check_done
    original_invoke = invoker_class.invoke_process_element

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if getattr(_SDF, 'capturing', False):
            _SDF.tracker = self

    def check_done(self):
        if getattr(_SDF, 'capturing', False) and \
                getattr(_SDF, 'tracker', None) is self:
            return      # checked once the outputs have been consumed
        return original_check(self)

    def invoke_process_element(self, *args, **kwargs):
        outputs = original_invoke(self, *args, **kwargs)
        _SDF.capturing, _SDF.tracker = True, None
        try:
            for output in outputs:
                if isinstance(output, invoker_class.Result):
                    tracker = _SDF.tracker
                    _SDF.capturing = False
                    if tracker is not None:
                        deferred = tracker.deferred_status()
                        if output.residual_restriction is None and deferred:
                            output = invoker_class.Result(
                                residual_restriction=deferred[0])
                        original_check(tracker)
                yield output
        finally:
            _SDF.capturing, _SDF.tracker = False, None

    tracker_class.__init__ = init
    tracker_class.check_done = check_done
    setattr(invoke_process_element, _INSTALLED, True)
    invoker_class.invoke_process_element = invoke_process_element
    _install_sdf_watermark_hold()


def _install_sdf_watermark_hold():
    evaluator = transform_evaluator._ProcessElementsEvaluator  # pylint: disable=protected-access
    original = evaluator.process_element

    def process_element(self, element):
        original(self, element)
        value = element.value
        key = value.encoded_key if hasattr(value, 'encoded_key') else value[0]
        window = element.windows[0]
        state = self._step_context.get_keyed_state(key)  # pylint: disable=protected-access
        fn = self._process_fn  # pylint: disable=protected-access
        if state.get_state(window, fn.watermark_hold_tag) != \
                WatermarkManager.WATERMARK_NEG_INF:
            return            # done: no hold
        # The runner never reads the estimator back; a DoFn of ours tells
        # its watermark for an element through ``local_watermark``.
        tell = getattr(fn.sdf, 'local_watermark', None)
        sdf_element = state.get_state(window, fn._element_tag)  # pylint: disable=protected-access
        estimated = tell(sdf_element) if tell and sdf_element else None
        if isinstance(estimated, Timestamp):
            state.add_state(window, fn.watermark_hold_tag, estimated)
            self.keyed_holds[key] = estimated

    evaluator.process_element = process_element


def _install_override_order():
    get = direct_runner._get_transform_overrides  # pylint: disable=protected-access
    if getattr(get, _INSTALLED, False):
        return

    def overrides_in_working_order(pipeline_options):
        overrides = get(pipeline_options)
        streaming = [o for o in overrides if type(o).__name__ in (
            'StreamingGroupByKeyOverride', 'StreamingGroupAlsoByWindowOverride')]
        return [o for o in overrides if o not in streaming] + streaming

    setattr(overrides_in_working_order, _INSTALLED, True)
    direct_runner._get_transform_overrides = overrides_in_working_order  # pylint: disable=protected-access


def _install_fresh_sampler():
    call = executor.TransformExecutor.call
    if getattr(call, _INSTALLED, False):
        return

    def call_with_fresh_sampler(self, state_sampler):
        fresh = statesampler.StateSampler('', counters.CounterFactory())
        statesampler.set_current_tracker(fresh)
        try:
            return call(self, fresh)
        finally:
            statesampler.set_current_tracker(state_sampler)

    setattr(call_with_fresh_sampler, _INSTALLED, True)
    executor.TransformExecutor.call = call_with_fresh_sampler


def low_watermark(result):
    """The pipeline's low watermark on the local runner while it runs: the
    earliest output watermark of any step not yet done (None before the
    first one moves, or on another runner).  Read without the runner's lock:
    a snapshot for progress display, never for decisions."""
    manager = getattr(getattr(result, '_evaluation_context', None),
                      '_watermark_manager', None)
    if manager is None:
        return None
    try:
        marks = [tw.output_watermark for tw in list(
            manager._transform_to_watermarks.values())]  # pylint: disable=protected-access
    except RuntimeError:        # changed while read: no value this time
        return None
    open_marks = [m for m in marks if m < WatermarkManager.WATERMARK_POS_INF]
    if not open_marks:
        return None
    low = min(open_marks)
    return None if low <= WatermarkManager.WATERMARK_NEG_INF else low
