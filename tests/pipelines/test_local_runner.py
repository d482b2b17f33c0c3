"""The local runner's patches to Beam's trigger driver (pipelines/local_runner.py),
driven directly, with the watermarks a streaming run can hand it."""
import apache_beam as beam
import pytest
from apache_beam.transforms import trigger, window
from apache_beam.transforms.core import Windowing
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming, WindowedValue

from pipelines import local_runner
from transforms import windows

T0 = 1767225600           # 2026-01-01T00:00:00Z
W = window.IntervalWindow(Timestamp.of(T0), Timestamp.of(T0 + 60))


class _Clock:
    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now


def _driver(spec, clock):
    local_runner.install()
    spec = windows.parse_trigger(spec)
    windowing = Windowing(
        window.FixedWindows(60), triggerfn=spec.trigger(),
        accumulation_mode=spec.accumulation_mode(),
        allowed_lateness=Duration(seconds=spec.lateness))
    return trigger.create_trigger_driver(windowing, clock=clock)


def _record(offset):
    return WindowedValue(f'r{offset}', Timestamp.of(T0 + offset), [W])


def _timers(state):
    return state.get_timers(watermark=Timestamp.of(T0 + 10**6),
                            processing_time=Timestamp.of(T0 + 10**6))[0]


def _fire(driver, state, watermark, clock, input_watermark):
    """Fires (and clears) the timers due at ``watermark`` / ``clock``, as the
    runner does, the input watermark being ``input_watermark``."""
    due, _ = state.get_timers(clear=True, watermark=watermark,
                              processing_time=clock)
    panes = []
    for window_id, (name, domain, timestamp, _) in due:
        panes += driver.process_timer(window_id, name, domain, timestamp,
                                      state, input_watermark)
    return panes


def test_a_late_record_fires_a_late_pane_and_releases_its_hold():
    state = trigger.InMemoryUnmergedState()
    driver = _driver('late=1,lateness=1h', _Clock(T0))
    list(driver.process_elements(state, [_record(1)], Timestamp.of(T0),
                                 Timestamp.of(T0)))
    # The watermark passes the window's end: its ON_TIME pane.
    fired = _fire(driver, state, W.end, Timestamp(0), W.end)
    assert [p.pane_info.timing for p in fired] == [PaneInfoTiming.ON_TIME]
    # A late record in a bundle whose output watermark is still behind the
    # window's end (held there until the bundle that fired commits).
    late = list(driver.process_elements(state, [_record(2)],
                                        Timestamp.of(T0 + 30),
                                        Timestamp.of(T0 + 70)))
    assert [p.pane_info.timing for p in late] == [PaneInfoTiming.LATE]
    assert [p.pane_info.index for p in late] == [1]
    # Nothing holds the watermark at the window any more (no timer is left
    # that would release it).
    assert state.get_state(W, driver.WATERMARK_HOLD) is None


def test_an_early_firing_is_early_while_the_clock_is_past_the_windows_end():
    # A live stream: event time is close to the clock, the watermark lags.
    clock = _Clock(Timestamp.of(T0 + 50))
    state = trigger.InMemoryUnmergedState()
    driver = _driver('early=10s', clock)
    list(driver.process_elements(state, [_record(1)], Timestamp.of(T0),
                                 Timestamp.of(T0)))
    clock.now = Timestamp.of(T0 + 65)
    fired = _fire(driver, state, Timestamp.of(T0 + 55), clock.now,
                  Timestamp.of(T0 + 55))
    assert [p.pane_info.timing for p in fired] == [PaneInfoTiming.EARLY]
    # The end-of-window timer is still there for the ON_TIME pane.
    assert any(t[1][1] == trigger.TimeDomain.WATERMARK and
               t[1][2] == W.end for t in _timers(state))
    on_time = _fire(driver, state, W.end, clock.now, W.end)
    assert [(p.pane_info.timing, p.pane_info.index) for p in on_time] == [
        (PaneInfoTiming.ON_TIME, 1)]


# ------------------------------------------------ what a bundle costs less

class _Stateful(beam.DoFn):
    COUNT = beam.transforms.userstate.CombiningValueStateSpec(
        'count', beam.coders.VarIntCoder(), sum)
    TIMER = beam.transforms.userstate.TimerSpec(
        'flush', beam.transforms.userstate.TimeDomain.WATERMARK)

    def process(self, element, count=beam.DoFn.StateParam(COUNT),
                flush=beam.DoFn.TimerParam(TIMER)):
        yield element

    @beam.transforms.userstate.on_timer(TIMER)
    def on_flush(self):
        yield 'flushed'


class _Stateless(beam.DoFn):
    def __init__(self):
        self.seen = []

    def process(self, element):
        self.seen.append(element)
        yield element


def test_dofn_specs_found_once_per_class_are_beams_specs():
    local_runner.install()
    from apache_beam.transforms import userstate
    cached = userstate.get_dofn_specs
    beams = cached.original
    assert cached is not beams
    states, timers = cached(_Stateful())
    assert (states, timers) == beams(_Stateful())
    assert {s.name for s in states} == {'count'} and len(timers) == 1
    again = cached(_Stateful())
    assert again == (states, timers)
    assert again[0] is not states          # callers get their own sets
    assert cached(_Stateless()) == (set(), set())
    assert userstate.is_stateful_dofn(_Stateful())
    assert not userstate.is_stateful_dofn(_Stateless())


def test_every_bundle_still_gets_a_fresh_dofn():
    local_runner.install()
    from apache_beam.runners.direct import transform_evaluator
    fn = _Stateless()
    first = transform_evaluator.pickler.roundtrip(fn)
    first.seen.append('bundle 1')
    second = transform_evaluator.pickler.roundtrip(fn)
    assert first is not fn and second is not first
    assert second.seen == [] and fn.seen == []


def test_a_state_copy_is_a_deep_copy_for_what_a_bundle_changes():
    import copy
    local_runner.install()
    state = trigger.InMemoryUnmergedState()
    other = window.IntervalWindow(Timestamp.of(T0 + 60), Timestamp.of(T0 + 120))
    state.set_timer(W, 'end', trigger.TimeDomain.WATERMARK, W.max_timestamp())
    state.set_global_state(trigger.MergeableStateAdapter.WINDOW_IDS,
                           {W: [1], other: [2]})
    state.add_state(1, trigger._ListStateTag('elements'), 'a')
    expected = copy.deepcopy((dict(state.timers), state.global_state))
    clone = state.copy()
    # What a bundle does to its copy does not reach the committed state.
    clone.set_timer(other, 'end', trigger.TimeDomain.WATERMARK,
                    other.max_timestamp())
    clone.clear_timer(W, 'end', trigger.TimeDomain.WATERMARK)
    ids = clone.get_global_state(trigger.MergeableStateAdapter.WINDOW_IDS)
    ids[W].append(3)
    del ids[other]
    clone.add_state(1, trigger._ListStateTag('elements'), 'b')
    assert (dict(state.timers), state.global_state) == expected
    assert state.get_state(1, trigger._ListStateTag('elements')) == ['a']
    assert clone.get_state(1, trigger._ListStateTag('elements')) == ['a', 'b']


def test_an_expired_windows_state_is_dropped_and_its_records_still_kept():
    state = trigger.InMemoryUnmergedState()
    driver = local_runner._KeepingLateDriver(
        _driver('late=1,lateness=1m,accumulating', _Clock(T0)))
    next_w = window.IntervalWindow(Timestamp.of(T0 + 60),
                                   Timestamp.of(T0 + 120))
    list(driver.process_elements(
        state, [_record(1), WindowedValue('n', Timestamp.of(T0 + 61),
                                          [next_w])],
        Timestamp.of(T0), Timestamp.of(T0)))
    fired = _fire(driver, state, W.end, Timestamp(0), W.end)
    assert [p.pane_info.timing for p in fired] == [PaneInfoTiming.ON_TIME]
    ids = trigger.MergeableStateAdapter.WINDOW_IDS
    # Within the allowed lateness the window's state stays: a late record
    # fires a LATE pane holding both records (accumulating).
    late = list(driver.process_elements(state, [_record(2)],
                                        Timestamp.of(T0 + 90),
                                        Timestamp.of(T0 + 90)))
    assert [(p.pane_info.timing, len(p.value)) for p in late] == [
        (PaneInfoTiming.LATE, 2)]
    assert W in state.get_global_state(ids)
    # Past the end plus the allowed lateness it is dropped; the next
    # window, still open, keeps its state.
    after = Timestamp.of(T0 + 60 + 61)
    late = list(driver.process_elements(state, [_record(3)], after, after))
    assert W not in state.get_global_state(ids)
    assert next_w in state.get_global_state(ids)
    assert len(state.state) == 1
    # What arrives for the dropped window is still handed back as late.
    assert [(type(p.value).__name__, p.value.values) for p in late] == [
        ('LateRecords', ['r3'])]


def test_the_grouping_state_holds_values_without_their_payloads():
    """Values that carry their payload (windows.WithRaw) are stored, fired
    and combined without it; a late one is handed back with it."""
    state = trigger.InMemoryUnmergedState()
    driver = local_runner._KeepingLateDriver(
        _driver('late=1,lateness=1m,accumulating', _Clock(T0)))

    def carried(offset):
        value = windows.WithRaw(f'r{offset}', b'line %d' % offset)
        return WindowedValue(value, Timestamp.of(T0 + offset), [W])

    list(driver.process_elements(state, [carried(1), carried(2)],
                                 Timestamp.of(T0), Timestamp.of(T0)))
    stored = [v for per_window in state.state.values()
              for v in per_window.get('elements', [])]
    assert sorted(stored) == ['r1', 'r2']
    fired = _fire(driver, state, W.end, Timestamp(0), W.end)
    assert [sorted(p.value) for p in fired] == [['r1', 'r2']]
    # Within the allowed lateness: a LATE pane of the values alone.
    late = list(driver.process_elements(state, [carried(3)],
                                        Timestamp.of(T0 + 90),
                                        Timestamp.of(T0 + 90)))
    assert [sorted(p.value) for p in late] == [['r1', 'r2', 'r3']]
    # After it: the value with its payload, for its dead letter.
    after = Timestamp.of(T0 + 60 + 61)
    late = list(driver.process_elements(state, [carried(4)], after, after))
    assert [p.value.values for p in late] == [
        [windows.WithRaw('r4', b'line 4')]]


def test_a_stateful_dofns_state_in_an_expired_window_is_dropped():
    state = trigger.InMemoryUnmergedState()
    tag = trigger._ReadModifyWriteStateTag('user/counted')
    later = window.IntervalWindow(Timestamp.of(T0 + 60), Timestamp.of(T0 + 120))
    timed = window.IntervalWindow(Timestamp.of(T0 - 60), Timestamp.of(T0))
    for w in (W, later, timed, window.GlobalWindow()):
        state.add_state(w, tag, 5)
    state.set_timer(timed, 'user/flush', trigger.TimeDomain.WATERMARK,
                    Timestamp.of(T0 + 10**6))
    lateness = Duration(seconds=60)
    # W ends at T0 + 60: expired once the watermark is past T0 + 120.
    local_runner._forget_expired_windows(state, Timestamp.of(T0 + 120),
                                         lateness)
    assert W in state.state
    local_runner._forget_expired_windows(state, Timestamp.of(T0 + 121),
                                         lateness)
    assert set(state.state) == {later, timed, window.GlobalWindow()}


# The FnApiRunner's grouping, partitioned key by key into chunks.

def _grouping_buffer(windowing, records):
    from apache_beam import coders
    from apache_beam.runners.portability.fn_api_runner import execution
    kv = coders.TupleCoder([coders.StrUtf8Coder(), coders.BytesCoder()])
    window_coder = windowing.windowfn.get_window_coder()
    pre = coders.WindowedValueCoder(kv, window_coder)
    post = coders.WindowedValueCoder(coders.TupleCoder(
        [coders.StrUtf8Coder(), coders.IterableCoder(coders.BytesCoder())]),
        window_coder)
    buffer = execution.GroupingBuffer(pre, post, windowing)
    impl = pre.get_impl()
    for start in range(0, len(records), 7):     # several data-plane messages
        buffer.append(b''.join(impl.encode_nested(r)
                               for r in records[start:start + 7]))
    return buffer, post


def _records(fixed):
    out = []
    for i in range(300):
        key, ts = f'k{(i * 7919) % 23}', T0 + (i * 37) % 600
        value = bytes([i % 256]) * (50 + i % 40)
        windows_ = ([window.IntervalWindow(Timestamp.of(ts - ts % 60),
                                           Timestamp.of(ts - ts % 60 + 60))]
                    if fixed else [window.GlobalWindow()])
        out.append(WindowedValue((key, value), Timestamp.of(ts), windows_))
    return out


@pytest.mark.parametrize('fixed', [False, True])
@pytest.mark.parametrize('n', [1, 2, 3])
def test_grouping_in_chunks_sends_beams_bytes(monkeypatch, fixed, n):
    """The chunks of a worker, joined, are the bytes Beam's partition gives
    (the same keys, values, windows and panes in the same order); chunks are
    cut at keys, and the table is emptied as they are encoded."""
    local_runner.install()
    from apache_beam.runners.portability.fn_api_runner import execution
    patched = execution.GroupingBuffer.partition
    monkeypatch.setattr(local_runner, 'GROUPING_CHUNK_BYTES', 1000)
    windowing = Windowing(window.FixedWindows(60) if fixed
                          else window.GlobalWindows())
    ours, post = _grouping_buffer(windowing, _records(fixed))
    beams, _ = _grouping_buffer(windowing, _records(fixed))
    chunked = patched(ours, n)
    expected = patched.beams(beams, n)
    assert [b''.join(chunks) for chunks in chunked] == [
        b''.join(parts) for parts in expected]
    assert sum(len(chunks) for chunks in chunked) > 2 * n   # really chunked
    impl = post.get_impl()              # each chunk holds whole elements
    assert sum(len(list(impl.decode_all(chunk)))
               for chunks in chunked for chunk in chunks) == sum(
        len(list(impl.decode_all(part))) for parts in expected
        for part in parts)
    assert not ours._table              # pylint: disable=protected-access
    assert patched(ours, n) is chunked  # partitioned once, as Beam does


_SEEN = []


class _Keep(beam.DoFn):
    def process(self, kv, win=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        _SEEN.append((kv[0], list(kv[1]), win, pane))
        yield kv[0]


def _grouped_on_fnapi():
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    _SEEN.clear()
    records = [(f'k{i % 50}', f'{i}-' + 'x' * (i % 200), T0 + i % 900)
               for i in range(5000)]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        (p | beam.Create(records)
         | beam.Map(lambda r: window.TimestampedValue((r[0], r[1]), r[2]))
         | beam.WindowInto(window.FixedWindows(60))
         | beam.GroupByKey()
         | beam.ParDo(_Keep()))
    return list(_SEEN)


def test_a_pipeline_groups_in_chunks_as_beam_does(monkeypatch):
    """A small pipeline on the FnApiRunner, its grouping sent in many chunks
    (each let go once sent, each message once read), gives every key its
    values, window and pane in the order Beam's grouping gives them."""
    local_runner.install()
    from apache_beam.runners.portability.fn_api_runner import execution
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.worker import data_plane
    manager = fn_runner.BundleManager
    monkeypatch.setattr(local_runner, 'GROUPING_CHUNK_BYTES', 2000)
    chunked = _grouped_on_fnapi()
    with monkeypatch.context() as beams:
        beams.setattr(execution.GroupingBuffer, 'partition',
                      execution.GroupingBuffer.partition.beams)
        beams.setattr(manager, '_send_input_to_worker',
                      manager._send_input_to_worker.beams)  # pylint: disable=protected-access
        beams.setattr(data_plane.InMemoryDataChannel, 'input_elements',
                      data_plane.InMemoryDataChannel.input_elements.beams)
        expected = _grouped_on_fnapi()
    assert len(expected) == 50 * 15
    assert chunked == expected


# A stateful DoFn's event-time timers hold its output watermark.

class _ReleaseAtEventTime(beam.DoFn):
    """Buffers each value and emits it from an event-time timer at its own
    timestamp, the timer set at the earliest value pending (as video_qoe's
    session walk does with its reports)."""
    from apache_beam.transforms.userstate import (BagStateSpec, TimerSpec,
                                                  on_timer)
    from apache_beam.transforms.timeutil import TimeDomain
    BUFFER = BagStateSpec('buffer', beam.coders.PickleCoder())
    FLUSH = TimerSpec('flush', TimeDomain.WATERMARK)

    def process(self, kv, stamp=beam.DoFn.TimestampParam,
                buffer=beam.DoFn.StateParam(BUFFER),
                flush=beam.DoFn.TimerParam(FLUSH)):
        pending = [seconds for seconds, _ in buffer.read()]
        buffer.add((float(stamp), kv[1]))
        if not pending or float(stamp) < min(pending):
            flush.set(stamp)

    @on_timer(FLUSH)
    def release(self, fired=beam.DoFn.TimestampParam,
                buffer=beam.DoFn.StateParam(BUFFER),
                flush=beam.DoFn.TimerParam(FLUSH)):
        held = list(buffer.read())
        buffer.clear()
        for seconds, value in held:
            if seconds <= float(fired):
                yield window.TimestampedValue(value, Timestamp.of(seconds))
            else:
                buffer.add((seconds, value))
        rest = [seconds for seconds, _ in held if seconds > float(fired)]
        if rest:
            flush.set(Timestamp.of(min(rest)))


def test_event_time_timers_hold_a_stateful_dofns_output_watermark():
    """Records released by event-time timers reach a fixed-window grouping
    with no allowed lateness on time, although the watermark jumps past
    their windows in one step (a backlog read at once): the timers hold the
    DoFn's output watermark at their time until they have fired, as Beam's
    model and the production runners do.  Beam's local runner set no such
    hold, and the grouping dropped every record behind the jump."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing import test_stream
    from apache_beam.testing.util import assert_that, equal_to
    local_runner.install()
    offsets = list(range(0, 300, 7))
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.of(T0))
    stream.add_elements([window.TimestampedValue(('k', i), Timestamp.of(T0 + i))
                         for i in offsets])
    stream.advance_watermark_to(Timestamp.of(T0 + 1000))
    stream.advance_watermark_to_infinity()
    options = PipelineOptions(['--runner=BundleBasedDirectRunner',
                               '--streaming'])
    with beam.Pipeline(options=options) as p:
        counts = (p | stream
                  | 'Release' >> beam.ParDo(_ReleaseAtEventTime())
                  | 'Fixed' >> beam.WindowInto(window.FixedWindows(60))
                  | 'One' >> beam.Map(lambda v: ('n', 1))
                  | 'Count' >> beam.CombinePerKey(sum)
                  | 'WithWindow' >> beam.ParDo(_WindowStart()))
        assert_that(counts, equal_to([
            (start, sum(1 for i in offsets if start <= i < start + 60))
            for start in range(0, 300, 60)]), label='EveryWindowOnTime')


class _WindowStart(beam.DoFn):
    def process(self, kv, w=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        assert pane.timing == PaneInfoTiming.ON_TIME
        yield int(w.start) - T0, kv[1]
