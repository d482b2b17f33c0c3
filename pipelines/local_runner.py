"""Fixes for Beam's local runners (the bundle-based DirectRunner; the
in-process FnApiRunner's grouping, last), installed before a run.

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

Late firings (streaming, allowed lateness): Beam's trigger driver decides
that a late record fires a pane by the input watermark, but labels the pane
and keeps or releases the window's watermark hold by the output watermark,
which lags behind in the bundle where the window's ON_TIME pane fired (or
while another window of the key holds it).  The late pane is then labelled
EARLY ("Watermark moved backwards in time"), and its hold is kept for an
ON_TIME pane that has already fired: no timer is left to release it, the
output watermark never passes the window, and once the input ends the
runner reports a stall.  Whether the late record meets the stale watermark
depends on how bundles fall, so a loaded machine hits it (a restarted job,
whose partitions resume at different offsets, sends many such records).
The firing is now labelled, and its hold handled, by the input watermark.
Beam reports a stall as a tuple, which cannot be raised (``TypeError:
exceptions must derive from BaseException``): it is now an exception naming
the steps that hold the watermark back.

Processing-time firings: Beam's trigger driver hands a firing's timestamp
to the trigger and to the pane's labelling as the watermark, and a
processing-time timer's timestamp is the wall clock.  On a live stream the
clock is ahead of the window's end (by the watermark lag) when an EARLY
firing comes: ``AfterWatermark`` takes it for the window's end passing,
clears the end-of-window timer and fires a pane labelled LATE; the window's
watermark hold then has no timer left to release it, and the run stalls.  A
processing-time firing is given the input watermark instead.

Event-time timers of a stateful DoFn: Beam's model holds the DoFn's output
watermark at a timer's time until it has fired (the portable runners,
Dataflow and Flink do); the local runner set no hold, so a grouping after
the DoFn saw the watermark pass a window before the timers of its records
had fired, and took what they emitted as late (video_qoe's session walk on
an in-order backlog: most rollup contributions kept late).  Each key a
bundle touched now holds the step at its earliest event-time timer.

Records after the allowed lateness: Beam's trigger driver skips them inside
the GroupByKey without a trace.  In a grouping step labelled
``transforms.windows.KEEP_LATE_LABEL`` the same decision (same rule, same
input watermark, same place) emits them instead, as a ``LateRecords`` value
in their window, which ``AggregatePerKey`` turns into dead letters.  A value
that carries the payload it was read from (``windows.WithRaw``) is stored
without it: only a late one keeps it, for its dead letters.

A session that a late record extends past the watermark inherits its
trigger's late phase (``AfterWatermark``'s ``is_late`` merges with ``any``):
it fires at once and sets no end-of-window timer, yet Beam's driver keeps
the pane's watermark hold for an ON_TIME pane (the window's end is ahead of
the watermark) that never comes, and the run stalled.  A pane's hold is
released when its window's trigger is in its late phase.

Latency on a live stream: the runner's single worker takes its queue in
order, and its monitor schedules a bundle's consumers only at its next
round; a splittable read's continuation, queued at once, made every step
after it wait a whole round of reads, so a record crossed a job's dozen
steps at one step per round (tens of seconds).  A read's continuation now
waits while the steps after it have work queued (at most
READ_HOLD_SECONDS).  A due timer is handed out once until its bundle has
run (Beam handed it out at every round: an early firing twice, two equal
panes), the stall check only looks at timers, and the checkpoint timer
Beam starts for each splittable invocation is cancelled when it ends (left
running, it split a later invocation at a random point).

The cost of a bundle: the runner builds a new ``DoFnRunner`` for every
bundle of every step, and on the way asks several times (scheduling the
bundle, starting it, validating it) for the DoFn's state and timer specs,
which Beam finds by inspecting the signature of every method of the DoFn:
about two thirds of the runner's CPU time on a stream of small bundles (a
``TestStream`` ticking each second).  The specs are a property of the DoFn's
class (its methods' defaults); they are now found once per class.  Likewise
the signatures of its methods and the argument names and defaults read from
them (once per function), and the DoFn's pickled
form: every bundle still gets a fresh DoFn unpickled from it, as before, but
the DoFn is pickled once per step, not once per bundle.  And a grouping
step copies each key's state for every bundle (so that a failed bundle
leaves it untouched), its timers and the trigger driver's window ids with
``copy.deepcopy``: they hold dicts and lists of windows, timestamps and
numbers, which never change, so copying the dicts and lists alone is the
same copy at a fraction of the cost (on the sensors job's stream the deep
copies were a fifth of the run).  Beam's trigger driver also builds a new
class each time it reads or adds to a combining state (a pane index, an
element count); that tag is now built once per state tag.  Nor does Beam's
trigger driver ever drop a window's state once the window has expired (its
"TODO(robertwb): allowed lateness"), so a key's state, and the copy of it
made for every bundle, grew with every window of the stream: the grouping
steps that keep late records (below) now drop it.  So does the state of a
stateful DoFn in a window: the runner keeps it after the window has expired
(Beam's model drops it then); it is now dropped, where no timer of the window
is left, at the end of a bundle that touched the key.

The in-process portable runner (``FnApiRunner``, batch replays): its
grouping step (``GroupingBuffer``) decodes every element of the data plane
into a table of values per key, then encodes the whole table into one output
stream per worker, copies that stream into one ``bytes`` (``.get()``) and
only then clears the table; sending it, the runner writes those bytes into
another output stream, copies that into one more ``bytes`` and wraps it in
one data-plane message, which the in-memory data plane keeps, like every
message of the bundle, until the bundle's last message has been read.  A
shuffle was thus held four or five times at once (a 10,000,000-record
video_qoe replay: 971 MiB before its first shuffle's 328 MiB were sent,
1,913 MiB after).  The table is now encoded key by key, in Beam's order
(the table's, keys dealt to workers in turn), each key's values dropped from
the table once encoded, into chunks of about ``GROUPING_CHUNK_BYTES``; each
chunk is sent as its own message and let go once sent (the runner reads
what it sent again only for a split manager, which only Beam's tests set:
then it is kept), and the in-memory data plane lets go of a message once the
worker has read it.  The bytes, and so the grouped values, windows, panes
and their order, are Beam's; a worker reads a message per chunk as it reads
Beam's one message (each holds whole elements).  Once a grouping's table is
encoded, the C heap's free pages are returned to the system
(``transforms.memory``): the values it dropped fragment it.

All fixes are idempotent and touch nothing else.
"""
import collections
import copy
import threading
import time
import types
import weakref

from apache_beam.internal import pickler
from apache_beam.runners import sdf_utils
from apache_beam.transforms import core
from apache_beam.transforms import trigger
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.direct import executor
from apache_beam.runners.direct import sdf_direct_runner
from apache_beam.runners.direct import transform_evaluator
from apache_beam.runners.direct.util import TimerFiring
from apache_beam.runners.direct.watermark_manager import WatermarkManager
from apache_beam.transforms.window import BoundedWindow, IntervalWindow
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import (PaneInfo, PaneInfoTiming,
                                              WindowedValue)
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import userstate
from apache_beam.utils import counters

from transforms import memory, windows
from transforms.io import _kafka_commits

_INSTALLED = '_realtime_pipelines_fresh_sampler'
_HOLDS = '_realtime_pipelines_timer_holds'


def install():
    _install_timer_firing()
    _install_dofn_specs_cache()
    _install_stall_check()
    _install_pane_timing()
    _install_late_firing_watermark()
    _install_late_phase_hold()
    _install_keep_late()
    _install_fresh_sampler()
    _install_override_order()
    _install_sdf_fix()
    _install_timer_holds()
    _install_read_commits()
    _install_grouping_chunks()


_SDF = threading.local()


def _install_dofn_specs_cache():
    original = userstate.get_dofn_specs
    if getattr(original, _INSTALLED, False):
        return
    found = weakref.WeakKeyDictionary()   # DoFn class -> (states, timers)
    lock = threading.Lock()

    def get_dofn_specs(dofn):
        cls = type(dofn)
        # Beam reads the specs from the defaults of the DoFn's methods: the
        # class's, unless the instance holds methods of its own.
        if any(isinstance(v, types.MethodType)
               for v in getattr(dofn, '__dict__', {}).values()):
            return original(dofn)
        with lock:
            specs = found.get(cls)
        if specs is None:
            specs = original(dofn)      # raises for an invalid DoFn, every time
            with lock:
                found[cls] = specs
        states, timers = specs
        return set(states), set(timers)

    setattr(get_dofn_specs, _INSTALLED, True)
    get_dofn_specs.original = original
    userstate.get_dofn_specs = get_dofn_specs
    # Imported by name where the local runner reads them.
    transform_evaluator.get_dofn_specs = get_dofn_specs
    _install_signature_cache()
    _install_pickled_dofns()
    _install_state_copy()
    _install_user_state_expiry()


def _install_user_state_expiry():
    evaluator = transform_evaluator._ParDoEvaluator  # pylint: disable=protected-access
    if getattr(evaluator.finish_bundle, _INSTALLED, False):
        return
    original = evaluator.finish_bundle

    def finish_bundle(self):
        result = original(self)
        if self.user_state_context is not None:
            applied = self._applied_ptransform  # pylint: disable=protected-access
            watermark = self._evaluation_context._watermark_manager \
                .get_watermarks(applied).input_watermark  # pylint: disable=protected-access
            lateness = applied.inputs[0].windowing.allowed_lateness
            for state in self._step_context.partial_keyed_state.values():  # pylint: disable=protected-access
                _forget_expired_windows(state, watermark, lateness)
        return result

    setattr(finish_bundle, _INSTALLED, True)
    evaluator.finish_bundle = finish_bundle


def _forget_expired_windows(state, watermark, lateness):
    """Drops a key's user state in the interval windows the input watermark
    has passed by more than the allowed lateness, where no timer is left."""
    for window in [w for w in state.state
                   if isinstance(w, IntervalWindow)
                   and watermark > w.end + lateness
                   and not state.timers.get(w)]:
        del state.state[window]


_UNCHANGING = (int, float, str, bytes, bool, type(None), Timestamp,
               BoundedWindow)


def _copied(value):
    """``copy.deepcopy(value)``, sharing what never changes: windows,
    timestamps, numbers and text; copying dicts, lists, tuples and sets."""
    if isinstance(value, _UNCHANGING):
        return value
    if type(value) is dict:
        return {k: _copied(v) for k, v in value.items()}
    if type(value) is list:
        return [_copied(v) for v in value]
    if type(value) in (tuple, set, frozenset):
        return type(value)(_copied(v) for v in value)
    return copy.deepcopy(value)


def _install_state_copy():
    state_class = trigger.InMemoryUnmergedState
    if getattr(state_class.copy, _INSTALLED, False):
        return

    def copy_state(self):
        cloned = state_class(defensive_copy=self.defensive_copy)
        # {window: {(name, time domain, tag): timestamp}}
        cloned.timers = collections.defaultdict(
            dict, ((w, _copied(t)) for w, t in self.timers.items()))
        cloned.global_state = _copied(self.global_state)
        for window, tags in self.state.items():
            for tag, values in tags.items():
                cloned.state[window][tag] = copy.copy(values)
        return cloned

    setattr(copy_state, _INSTALLED, True)
    state_class.copy = copy_state

    tag_class = trigger._CombiningValueStateTag  # pylint: disable=protected-access
    original = tag_class.without_extraction

    def without_extraction(self):
        found = self.__dict__.get('_without_extraction')
        if found is None:
            found = self.__dict__['_without_extraction'] = original(self)
        return found

    tag_class.without_extraction = without_extraction


def _install_signature_cache():
    original = core.get_signature
    if getattr(original, _INSTALLED, False):
        return
    functions = weakref.WeakKeyDictionary()   # function -> signature
    methods = weakref.WeakKeyDictionary()     # function -> bound signature
    lock = threading.Lock()

    def get_signature(func):
        if isinstance(func, types.MethodType):
            found, key = methods, func.__func__
        elif isinstance(func, types.FunctionType):
            found, key = functions, func
        else:
            return original(func)
        with lock:
            signature = found.get(key)
        if signature is None:
            signature = original(func)     # immutable: shared safely
            with lock:
                found[key] = signature
        return signature

    setattr(get_signature, _INSTALLED, True)
    core.get_signature = get_signature

    # The argument names and defaults read from a signature (by
    # DoFnSignature, for each method of the DoFn at each bundle): once per
    # function too, handed out as fresh lists.
    args_of = core.get_function_args_defaults
    function_args = weakref.WeakKeyDictionary()
    method_args = weakref.WeakKeyDictionary()

    def get_function_args_defaults(func):
        if isinstance(func, types.MethodType):
            found, key = method_args, func.__func__
        elif isinstance(func, types.FunctionType):
            found, key = function_args, func
        else:
            return args_of(func)
        with lock:
            known = found.get(key)
        if known is None:
            known = args_of(func)
            with lock:
                found[key] = known
        return list(known[0]), list(known[1])

    core.get_function_args_defaults = get_function_args_defaults


class _PickledOnce:
    """``pickler`` as the local runner's ParDo evaluator uses it, whose
    ``roundtrip`` pickles an object once and unpickles it each time."""

    def __init__(self, module):
        self._module = module
        self._pickled = {}            # id -> (weak reference, bytes)
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._module, name)

    def roundtrip(self, obj):
        # What the pickler's own roundtrip does (pickle, unpickle; no
        # compression), with the pickling done once.
        lib = self._module.desired_pickle_lib
        dumps, loads = getattr(lib, '_dumps', None), getattr(lib, '_loads',
                                                             None)
        if dumps is None or loads is None:
            return self._module.roundtrip(obj)
        key = id(obj)
        with self._lock:
            found = self._pickled.get(key)
        if found is None or found[0]() is not obj:
            try:
                ref = weakref.ref(obj, lambda _, k=key: self._forget(k))
            except TypeError:
                return self._module.roundtrip(obj)
            found = (ref, dumps(obj))
            with self._lock:
                self._pickled[key] = found
        return loads(found[1])

    def _forget(self, key):
        with self._lock:
            self._pickled.pop(key, None)


def _install_pickled_dofns():
    if isinstance(transform_evaluator.pickler, _PickledOnce):
        return
    transform_evaluator.pickler = _PickledOnce(pickler)


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
        _SDF.capturing, _SDF.tracker, _SDF.timer = True, None, None
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
            if getattr(_SDF, 'timer', None) is not None:
                # The invocation is over: its checkpoint timer must not
                # split the next one's restriction.
                _SDF.timer.cancel()
            _SDF.capturing, _SDF.tracker, _SDF.timer = False, None, None

    tracker_class.__init__ = init
    sdf_direct_runner.Timer = _CheckpointTimer
    tracker_class.check_done = check_done
    setattr(invoke_process_element, _INSTALLED, True)
    invoker_class.invoke_process_element = invoke_process_element
    _install_sdf_watermark_hold()


class _CheckpointTimer(threading.Timer):
    """The timer with which the runner checkpoints a splittable DoFn's
    invocation after a second, known to the invocation that starts it.

    Beam's invoker starts one per invocation and never cancels it; the
    invoker is shared by every invocation of the step, so a timer left
    from a short invocation (a Kafka read that has caught up returns in
    milliseconds) splits whichever invocation runs a second later, at a
    random point.  Its invocation cancels it when it ends
    (``invoke_process_element`` above)."""

    def start(self):
        _SDF.timer = self
        super().start()


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


def _install_timer_holds():
    """A stateful DoFn's pending event-time timers hold its output
    watermark at their time until their firing has run (Beam's model: a
    timer's output timestamp defaults to its firing time; the portable
    runners, Dataflow and Flink hold there).  Beam's local runner sets no
    hold ("TODO(ccy): add corresponding watermark holds"): the DoFn's output
    watermark followed its input at once, so a grouping after it saw the
    watermark pass a window before the timers of that window's records had
    fired, and took what they emitted as late (video_qoe's session walk:
    the rollups of an in-order backlog kept late).  After each bundle, each
    key it touched holds at its earliest event-time timer (never below the
    step's output watermark, which a hold cannot move back)."""
    evaluator = transform_evaluator._ParDoEvaluator  # pylint: disable=protected-access
    original = evaluator.finish_bundle
    if getattr(original, _HOLDS, False):
        return

    def finish_bundle(self):
        result = original(self)
        if self.user_state_context is None:
            return result
        floor = None
        holds = result.keyed_watermark_holds
        for key, state in self._step_context.partial_keyed_state.items():  # pylint: disable=protected-access
            earliest = min((stamp for timers in state.timers.values()
                            for (_, domain, _), stamp in timers.items()
                            if domain == userstate.TimeDomain.WATERMARK),
                           default=None)
            if earliest is not None:
                if floor is None:
                    manager = self._evaluation_context._watermark_manager  # pylint: disable=protected-access
                    floor = manager.get_watermarks(
                        self._applied_ptransform).output_watermark  # pylint: disable=protected-access
                earliest = max(earliest, floor)
            holds[key] = earliest
        return result

    setattr(finish_bundle, _HOLDS, True)
    setattr(finish_bundle, _INSTALLED, True)
    evaluator.finish_bundle = finish_bundle


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


def _install_pane_timing():
    driver = trigger.GeneralTriggerDriver
    if getattr(driver.process_timer, _INSTALLED, False):
        return

    original = driver.process_timer

    def process_timer(self, window_id, name, time_domain, timestamp, state,
                      input_watermark=None):
        # A trigger takes the timestamp it is given for the watermark
        # (AfterWatermark: "the window's end has passed"); a processing-time
        # trigger does not look at it.  For a processing-time firing that is
        # the input watermark, not the clock.
        if time_domain == trigger.TimeDomain.REAL_TIME and \
                input_watermark is not None:
            timestamp = input_watermark
        return original(self, window_id, name, time_domain, timestamp, state,
                        input_watermark)

    setattr(process_timer, _INSTALLED, True)
    driver.process_timer = process_timer


def _install_late_phase_hold():
    driver = trigger.GeneralTriggerDriver
    if getattr(driver._output, _INSTALLED, False):  # pylint: disable=protected-access
        return
    original = driver._output  # pylint: disable=protected-access

    def _output(self, window, finished, state, output_watermark,
                maybe_ontime):
        # Beam keeps a pane's watermark hold while the window's end is ahead
        # of the watermark, for the ON_TIME pane still to come.  A window
        # whose trigger is in its late phase has fired that pane: a session
        # a late record extended past the watermark (the merged window
        # inherits the late phase) has no ON_TIME pane and no end-of-window
        # timer left, and the hold would never be released.
        pane = original(self, window, finished, state, output_watermark,
                        maybe_ontime)
        is_late = getattr(self.trigger_fn, 'is_late', None)
        if is_late is not None and \
                state.get_state(window, self.WATERMARK_HOLD) is not None and \
                is_late(state.at(window, self.clock)):
            state.clear_state(window, self.WATERMARK_HOLD)
        return pane

    setattr(_output, _INSTALLED, True)
    driver._output = _output  # pylint: disable=protected-access


def _install_late_firing_watermark():
    driver = trigger.GeneralTriggerDriver
    if getattr(driver.process_elements, _INSTALLED, False):
        return
    original = driver.process_elements

    def process_elements(self, state, windowed_values, output_watermark,
                         input_watermark=trigger.MIN_TIMESTAMP):
        # The firing an element causes is labelled, and its hold kept or
        # released, by the watermark its trigger decided on (the input one).
        return original(self, state, windowed_values,
                        max(output_watermark, input_watermark),
                        input_watermark)

    setattr(process_elements, _INSTALLED, True)
    driver.process_elements = process_elements


class _KeepingLateDriver:
    """A trigger driver that hands back, as ``LateRecords`` in their window,
    the values Beam's driver would skip: those of an expired window, and
    those of a window (for merging windows: the session they would join)
    whose trigger has finished."""

    def __init__(self, driver):
        self._driver = driver

    def __getattr__(self, name):
        return getattr(self._driver, name)

    def _closed(self, state, window, input_watermark):
        """None (open), 'expired' or 'finished'."""
        driver = self._driver
        if input_watermark > window.end + driver.allowed_lateness:
            return 'expired'  # Beam's rule for an expired window
        # A window whose trigger has finished takes nothing more either.
        # Beam's GeneralTriggerDriver runs every windowing as merging
        # (``is_merging`` is always true), so this is decided after its
        # merge, below; the check here holds for a driver that does not.
        if not driver.is_merging and \
                state.get_state(window, driver.TOMBSTONE):
            return 'finished'
        return None

    def _late(self, window, values, how, input_watermark):
        closed = window.end + self._driver.allowed_lateness
        return WindowedValue(
            windows.LateRecords(values, float(input_watermark - closed),
                                finished=how == 'finished'),
            window.max_timestamp(), (window,), _LATE_PANE)

    def process_elements(self, state, windowed_values, output_watermark,
                         input_watermark=trigger.MIN_TIMESTAMP):
        yield from self._process_elements(state, windowed_values,
                                          output_watermark, input_watermark)
        self._forget_expired(state, input_watermark)

    def process_timer(self, window_id, name, time_domain, timestamp, state,
                      input_watermark=None):
        yield from self._driver.process_timer(
            window_id, name, time_domain, timestamp, state, input_watermark)
        if input_watermark is not None:
            self._forget_expired(state, input_watermark)

    def _forget_expired(self, state, input_watermark):
        """Drops the state of the windows that have expired (the input
        watermark past their end plus the allowed lateness), as Beam's
        Python trigger driver never does: nothing reads it again, for what
        arrives for such a window is handed back as late above, before the
        driver sees it.  Without this a key's state grows with every window
        of the stream, and the runner copies it for every bundle.  Only for
        windows that do not merge (a new session may merge with an expired
        one), and only windows with no timer and no watermark hold left."""
        if self._driver.window_fn.is_merging():
            return
        tag = trigger.MergeableStateAdapter.WINDOW_IDS
        ids = state.get_global_state(tag)
        if not ids:
            return
        lateness = self._driver.allowed_lateness
        forgotten = False
        for window in [w for w in ids if input_watermark > w.end + lateness]:
            if any(state.timers.get(i) or
                   state.state.get(i, {}).get('watermark')
                   for i in ids[window]):
                continue
            for i in ids.pop(window):
                state.state.pop(i, None)
            forgotten = True
        if forgotten:
            state.set_global_state(tag, ids)

    def _process_elements(self, state, windowed_values, output_watermark,
                          input_watermark):
        # A value that carries what it was read from (``windows.WithRaw``)
        # keeps it only where it is late: what the driver stores for an
        # open window is the value alone, so the grouping's state never
        # holds a payload.  ``carried`` maps a stored value (by identity) to
        # the value with its payload, for those the driver then skips.
        kept, carried, late = [], {}, {}
        for value in windowed_values:
            open_windows = []
            for window in value.windows:
                how = self._closed(state, window, input_watermark)
                if how:
                    late.setdefault((window, how), []).append(value.value)
                else:
                    open_windows.append(window)
            if not open_windows:
                continue
            stored = value.value
            if isinstance(stored, windows.WithRaw):
                stored = stored.value
                carried[id(stored)] = value.value
            if stored is value.value and \
                    len(open_windows) == len(value.windows):
                kept.append(value)
            else:
                kept.append(WindowedValue(stored, value.timestamp,
                                          open_windows, value.pane_info))
        for (window, how), values in late.items():
            yield self._late(window, values, how, input_watermark)
        if not kept:
            return
        if not self._driver.is_merging:
            yield from self._driver.process_elements(
                state, kept, output_watermark, input_watermark)
            return
        # Merging (for Beam's driver: every windowing): it merges first, then
        # skips the values whose merged window has finished (for sessions,
        # its tombstone merged in).  Every value it keeps it adds to the
        # window's elements; the others it skipped, and they are handed back
        # in the window they joined.
        watched = _WatchedElements(state, self._driver.ELEMENTS)
        yield from self._driver.process_elements(
            watched, kept, output_watermark, input_watermark)
        skipped = [(window, carried.get(id(value.value), value.value))
                   for value in kept
                   for window in value.windows[watched.added(value.value):]]
        if not skipped:
            return
        merged = trigger.MergeableStateAdapter(state).known_windows()
        finished = {}
        for window, value in skipped:
            into = next((m for m in merged if m.start <= window.start and
                         window.end <= m.end), window)
            finished.setdefault(into, []).append(value)
        for window, values in finished.items():
            yield self._late(window, values, 'finished', input_watermark)


class _WatchedElements:
    """The unmerged state of a trigger driver, counting which values it adds
    to the elements of a window (by identity: the driver adds the value
    objects it is given)."""

    def __init__(self, state, elements_tag):
        self._state = state
        self._tag = elements_tag
        self._added = {}

    def __getattr__(self, name):
        return getattr(self._state, name)

    def add_state(self, window, tag, value):
        if tag is self._tag:
            self._added[id(value)] = self._added.get(id(value), 0) + 1
        return self._state.add_state(window, tag, value)

    def added(self, value) -> int:
        return self._added.get(id(value), 0)


_LATE_PANE = PaneInfo(is_first=False, is_last=False,
                      timing=PaneInfoTiming.LATE, index=-1,
                      nonspeculative_index=-1)


def _install_keep_late():
    evaluator = transform_evaluator._StreamingGroupAlsoByWindowEvaluator  # pylint: disable=protected-access
    if getattr(evaluator.start_bundle, _INSTALLED, False):
        return
    original = evaluator.start_bundle

    def start_bundle(self):
        original(self)
        label = self._applied_ptransform.full_label  # pylint: disable=protected-access
        if windows.KEEP_LATE_LABEL in label.split('/'):
            self.driver = _KeepingLateDriver(self.driver)

    setattr(start_bundle, _INSTALLED, True)
    evaluator.start_bundle = start_bundle


# While the steps after a splittable read have work queued, the read's next
# invocation waits for them, at most this long.
READ_HOLD_SECONDS = 1.0
_HELD_SINCE = '_realtime_pipelines_reads_held_since'


def _install_timer_firing():
    monitor = executor._ExecutorServiceParallelExecutor._MonitorTask  # pylint: disable=protected-access
    if getattr(monitor._fire_timers, _INSTALLED, False):  # pylint: disable=protected-access
        return

    def extract_all_timers(self):
        # What the stall check asks: it only looks (Beam's version marks
        # the due timers as handed out although nothing delivers them).
        timers, realtime, _ = _due_timers(self, record=False)
        return timers, realtime

    def fire_timers(self):
        run = self._executor  # pylint: disable=protected-access
        manager = run.evaluation_context._watermark_manager  # pylint: disable=protected-access
        busy = bool(run.transform_executor_services.executors)
        now = time.monotonic()
        since = getattr(run, _HELD_SINCE, None)
        hold = busy and (since is None or now - since < READ_HOLD_SECONDS)
        fired, _, held = _due_timers(manager, record=True, hold_reads=hold)
        setattr(run, _HELD_SINCE, (since or now) if held else None)
        for applied_ptransform, timers in fired:
            empty_bundle = run.evaluation_context.create_empty_committed_bundle(
                applied_ptransform.inputs[0])
            run.schedule_consumption(
                applied_ptransform, empty_bundle, timers,
                executor._CompletionCallback(  # pylint: disable=protected-access
                    run.evaluation_context, run.all_updates,
                    timer_firings=timers))
        return bool(fired)

    WatermarkManager.extract_all_timers = extract_all_timers
    setattr(fire_timers, _INSTALLED, True)
    monitor._fire_timers = fire_timers  # pylint: disable=protected-access


def _due_timers(manager, record, hold_reads=False):
    """Beam's ``extract_all_timers``: the due timers of each step, and
    whether a real-time timer is set in a step not done; and whether the
    continuations of splittable reads were held back (``hold_reads``).

    Processing-time timers: Beam hands a due timer out at every look until
    its bundle has run and cleared it.  The monitor looks once per round of
    the runner's queue, and a step that runs one bundle at a time (a
    grouping) may not have run it by then: the timer fired twice, and an
    early firing gave two equal panes.  A timer handed out and not yet
    delivered is now handed out once (``record``: the monitor's look).

    Reads first, steps after them last: the runner's single worker takes
    its queue in order and the monitor schedules a bundle's consumers only
    at its next round, after whatever was queued meanwhile.  A splittable
    read's next invocation (its continuation timer) queued at once made
    every step after it wait for a whole round of reads: a record crossed
    the job's dozen steps at one step per round, tens of seconds on a live
    stream.  With ``hold_reads`` (work is queued) it waits instead, at most
    READ_HOLD_SECONDS, so a poll's records reach the sinks before the next
    poll, and the next poll gathers what came meanwhile."""
    all_timers, realtime, held = [], False, False
    for transform, marks in manager._transform_to_watermarks.items():  # pylint: disable=protected-access
        read = isinstance(transform.transform, sdf_direct_runner.ProcessElements)
        with marks._lock:  # pylint: disable=protected-access
            known = {_timer_id(t) for t in marks._fired_timers}  # pylint: disable=protected-access
            fired = []
            clock = marks._clock.time()  # pylint: disable=protected-access
            for key, state in marks._keyed_states.items():  # pylint: disable=protected-access
                timers, had_realtime = state.get_timers(
                    watermark=marks._input_watermark,  # pylint: disable=protected-access
                    processing_time=clock)
                if had_realtime and marks._output_watermark < \
                        WatermarkManager.WATERMARK_POS_INF:  # pylint: disable=protected-access
                    realtime = True
                for window, (name, domain, stamp, tag) in timers:
                    if (key, window, name, domain, stamp, tag) not in known:
                        fired.append(TimerFiring(key, window, name, domain,
                                                 stamp, dynamic_timer_tag=tag))
            if not fired:
                continue
            if read and hold_reads:
                held = True
                continue
            if record:
                marks._fired_timers.update(fired)  # pylint: disable=protected-access
        fired.sort(key=lambda firing: firing.timestamp)
        all_timers.append((transform, fired))
    return all_timers, realtime, held


def _timer_id(firing):
    return (firing.encoded_key, firing.window, firing.name,
            firing.time_domain, firing.timestamp, firing.dynamic_timer_tag)


class LocalRunnerStall(RuntimeError):
    """Nothing left to run while the watermarks are incomplete."""


def _install_stall_check():
    monitor = executor._ExecutorServiceParallelExecutor._MonitorTask  # pylint: disable=protected-access
    if getattr(monitor._should_shutdown, _INSTALLED, False):  # pylint: disable=protected-access
        return
    original = monitor._should_shutdown  # pylint: disable=protected-access

    def should_shutdown(self):
        run = self._executor  # pylint: disable=protected-access
        _release_final(run)
        offer = run.visible_updates.offer

        def offer_an_exception(update):
            if isinstance(update.exception, tuple):
                # Beam reports a stall as a tuple, which cannot be raised.
                update.exception = LocalRunnerStall(
                    'the local runner stalled: nothing is left to run but '
                    + _stuck(run.evaluation_context))
            offer(update)

        run.visible_updates.offer = offer_an_exception
        try:
            return original(self)
        finally:
            run.visible_updates.offer = offer

    setattr(should_shutdown, _INSTALLED, True)
    monitor._should_shutdown = should_shutdown  # pylint: disable=protected-access


_RELEASE_EVERY = 0.2      # seconds between two looks for final records
_GRANULARITY = Duration(micros=1)
_LAST_RELEASE = [0.0]


def _release_final(run):
    """Between bundles: every window whose end plus allowed lateness is
    before every step's input watermark and every element still pending
    downstream of the splittable reads (with no due or fired timer) has
    emitted its final pane and it is written; tell the Kafka and Pub/Sub
    reads that horizon and the earliest pending timestamp (they commit
    offsets, or acknowledge messages, only for records final then: Kafka
    only when nothing is pending, Pub/Sub per message, see
    transforms/io/_kafka_commits.py and _pubsub_acks.py)."""
    if not _kafka_commits.tracking():
        return
    now = time.monotonic()
    manager = run.evaluation_context._watermark_manager  # pylint: disable=protected-access
    done = run.evaluation_context.is_done()
    if not done and now - _LAST_RELEASE[0] < _RELEASE_EVERY:
        return
    _LAST_RELEASE[0] = now
    # What the reads handed over before this look (a read's output is
    # visible below once the runner has committed it).
    _kafka_commits.prepare()
    horizon = pending_min = None
    clock = manager._clock.time()  # pylint: disable=protected-access
    for transform, marks in manager._transform_to_watermarks.items():  # pylint: disable=protected-access
        if isinstance(transform.transform, sdf_direct_runner.ProcessElements):
            continue
        with marks._lock:  # pylint: disable=protected-access
            if marks._fired_timers:  # pylint: disable=protected-access
                return
            pending = list(marks._pending)  # pylint: disable=protected-access
            mark = marks._input_watermark  # pylint: disable=protected-access
        for state in list(marks._keyed_states.values()):  # pylint: disable=protected-access
            due, _ = state.get_timers(watermark=mark, processing_time=clock)
            if due:
                return
        for bundle in pending:
            for value in bundle.get_elements_iterable():
                if value.timestamp <= mark:
                    mark = value.timestamp - _GRANULARITY
                if pending_min is None or value.timestamp < pending_min:
                    pending_min = value.timestamp
        horizon = mark if horizon is None else min(horizon, mark)
    if horizon is None:
        return
    seconds = float('inf') if horizon >= WatermarkManager.WATERMARK_POS_INF \
        else float(horizon)
    _kafka_commits.release(seconds, float('inf') if pending_min is None
                           else float(pending_min - _GRANULARITY))


def _stuck(evaluation_context) -> str:
    """Which steps hold the watermark back, and at what."""
    manager = evaluation_context._watermark_manager  # pylint: disable=protected-access
    held = []
    for transform, marks in manager._transform_to_watermarks.items():  # pylint: disable=protected-access
        if marks.output_watermark < marks.input_watermark:
            held.append(f'{transform.full_label} holds its output at '
                        f'{marks.output_watermark}')
    return '; '.join(held) or 'the watermarks are incomplete'


def _install_read_commits():
    """A splittable read's output is handed over when the runner commits
    its bundle: the Kafka and Pub/Sub ledgers learn it then (its offsets
    may be committed, its messages acknowledged, once final).  Knowing it only when the next read started
    was too late once reads wait for the steps after them: what a read's
    messages produced (dead letters) could be written before an
    acknowledgement of earlier messages while they were still held, and a
    restart after a kill then wrote them a second time."""
    callback = executor._CompletionCallback  # pylint: disable=protected-access
    original = callback.handle_result
    if getattr(original, _INSTALLED, False):
        return

    def handle_result(self, transform_executor, input_committed_bundle,
                      transform_result):
        committed = original(self, transform_executor,
                             input_committed_bundle, transform_result)
        applied = getattr(transform_executor, '_applied_ptransform', None)
        if applied is not None and isinstance(
                applied.transform, sdf_direct_runner.ProcessElements):
            _kafka_commits.read_committed()
        return committed

    setattr(handle_result, _INSTALLED, True)
    callback.handle_result = handle_result


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


# Encoded bytes of a grouping step gathered before they leave as one
# data-plane message (Beam's data plane flushes its streams at 10 MiB).
GROUPING_CHUNK_BYTES = 8 << 20


class _Chunks(list):
    """A worker's part of a grouping step, in chunks."""


def _install_grouping_chunks():
    """``GroupingBuffer.partition`` key by key into chunks (see the module's
    docstring); the runner sends each chunk as its own message."""
    from apache_beam.coders.coder_impl import create_OutputStream
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.worker import data_plane
    from apache_beam.runners.portability.fn_api_runner import execution
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.transforms.window import GlobalWindow, GlobalWindows

    buffer_class = execution.GroupingBuffer
    if getattr(buffer_class.partition, _INSTALLED, False):
        return

    def partition(self, n):
        if self._grouped_output:
            return self._grouped_output
        if self._windowing.is_default():        # as Beam does
            in_global_window = GlobalWindows.windowed_value(
                None, timestamp=GlobalWindow().max_timestamp(),
                pane_info=PaneInfo(is_first=True, is_last=True,
                                   timing=PaneInfoTiming.ON_TIME, index=0,
                                   nonspeculative_index=0)).with_value

            def windowed_key_values(key, values):
                return [in_global_window((key, values))]
        else:
            windowed_key_values = trigger.create_trigger_driver(
                self._windowing, True).process_entire_key
        coder_impl = self._post_grouped_coder.get_impl()
        key_coder_impl = self._key_coder.get_impl()
        chunks = [_Chunks() for _ in range(n)]
        streams = [create_OutputStream() for _ in range(n)]
        table = self._table
        for idx, encoded_key in enumerate(list(table)):
            values = table.pop(encoded_key)
            stream = streams[idx % n]
            for wkvs in windowed_key_values(
                    key_coder_impl.decode(encoded_key), values):
                coder_impl.encode_to_stream(wkvs, stream, True)
            del values
            if stream.size() >= GROUPING_CHUNK_BYTES:
                chunks[idx % n].append(stream.get())
                streams[idx % n] = create_OutputStream()
        for ix, stream in enumerate(streams):
            if stream.size() or not chunks[ix]:
                chunks[ix].append(stream.get())
        self._grouped_output = chunks
        table.clear()
        # (the values just dropped, many of them medium-sized objects in
        # the C heap, leave it fragmented: its free pages go back to the
        # system before the next stage reads the chunks)
        memory.release_free_memory()
        return chunks

    manager = fn_runner.BundleManager
    send = manager._send_input_to_worker  # pylint: disable=protected-access

    def send_input_to_worker(self, process_bundle_id, read_transform_id,
                             byte_streams):
        if isinstance(byte_streams, buffer_class):      # one worker
            byte_streams = byte_streams.partition(1)[0]
        if not isinstance(byte_streams, _Chunks):
            return send(self, process_bundle_id, read_transform_id,
                        byte_streams)
        # Without a split manager (tests' only) the runner never reads what
        # it sent again: a sent chunk is let go (a second send would fail).
        release = self._select_split_manager() is None  # pylint: disable=protected-access
        data_out = self._worker_handler.data_conn.output_stream(
            process_bundle_id, read_transform_id)
        for ix, chunk in enumerate(byte_streams):
            data_out.write(chunk)
            data_out.flush()        # one message a chunk, not one for all
            if release:
                byte_streams[ix] = None
        data_out.close()
        return None

    channel = data_plane.InMemoryDataChannel

    def input_elements(self, instruction_id, unused_expected_inputs,
                       abort_callback=None):
        # Beam's loop, letting go of each message once the worker has it.
        inputs, other_inputs, ix = self._inputs, [], 0
        while ix < len(inputs):
            element, inputs[ix] = inputs[ix], None
            ix += 1
            if element.instruction_id == instruction_id:
                if isinstance(element, beam_fn_api_pb2.Elements.Timers):
                    if not element.is_last:
                        yield element
                if isinstance(element, beam_fn_api_pb2.Elements.Data):
                    if element.data or element.is_last:
                        yield element
            else:
                other_inputs.append(element)
            element = None
        self._inputs = other_inputs

    setattr(partition, _INSTALLED, True)
    partition.beams = buffer_class.partition          # for tests
    send_input_to_worker.beams = send
    input_elements.beams = channel.input_elements
    buffer_class.partition = partition
    channel.input_elements = input_elements
    manager._send_input_to_worker = send_input_to_worker  # pylint: disable=protected-access
