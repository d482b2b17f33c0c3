"""Streaming semantics of windowed aggregation, stated with TestStream.

Event times are in 2026 and the TestStream clock starts at the epoch, as the
synthetic source does (see transforms.io.synthetic.test_stream).
"""
import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipelines.run import counters, summarize
from transforms import windows
from transforms.aggregate import AggregatePerKey
from transforms.logs.records import LogRecord
from transforms.logs.stats import LogStatsFn, stats_count, to_service_stats

T0 = 1767225600          # 2026-01-01T00:00:00Z, a multiple of 60
JOB = 'aggtest'


def rec(offset, service='a', status=200, latency=10.0):
    return LogRecord(Timestamp.of(T0 + offset), service, 'INFO', status,
                     latency, 'h', 'm', 'json')


def add(stream, *records):
    return stream.add_elements(
        [TimestampedValue(r, r.event_time) for r in records])


def run_stream(stream, check, window='fixed:60s', trigger='default',
               check_late=None):
    """Runs records through window + aggregate; `check(panes)` asserts on the
    sorted (service, window offset, timing, index, count, errors) tuples inside
    the pipeline; returns the run summary."""
    spec_w = windows.parse_window(window)
    spec_t = windows.parse_trigger(trigger)
    p = TestPipeline(options=PipelineOptions(
        runner='BundleBasedDirectRunner', streaming=True))
    aggregate = AggregatePerKey(
        LogStatsFn(), to_service_stats, stats_count, spec_t.accumulates_panes,
        JOB, keep_late=spec_t.lateness if check_late else None)
    rows = (p
            | stream
            | beam.Map(lambda r: (r.service, r))
            | windows.ApplyWindow(spec_w, spec_t)
            | aggregate)
    if check_late:
        assert_that(aggregate.late | beam.Map(
            lambda d: (d.stage, orjson.loads(d.raw)['event_time'],
                       d.reason)), check_late, label='LateDeadLetters')
    panes = (rows | beam.Map(lambda s: (
        s.service, int(s.window_start.micros // 1e6) - T0, s.pane_timing,
        s.pane_index, s.count, s.errors)))
    assert_that(panes, lambda got: check(
        sorted(got, key=lambda x: (x[0], x[1], x[3]))), label='Panes')
    result = p.run()
    result.wait_until_finish()
    return summarize(counters(result, JOB))


def equals(expected):
    def check(got):
        assert got == expected, got
    return check


def _late_letters(*expected):
    """(event second after T0, words the reason must hold) per dead letter."""
    def check(got):
        assert len(got) == len(expected), got
        for (stage, event_time, reason), (second, words) in zip(
                sorted(got, key=lambda g: g[1]), expected):
            assert stage == 'window.late'
            assert event_time == f'2026-01-01T00:{second // 60:02d}:' \
                f'{second % 60:02d}Z', event_time
            for word in words:
                assert word in reason, reason
    return check


def test_a_record_beyond_the_allowed_lateness_is_a_dead_letter():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(1), rec(2, status=503))
    stream.advance_watermark_to(Timestamp.of(T0 + 70))         # window closes
    add(stream, rec(3))                                        # late, accepted
    stream.advance_watermark_to(Timestamp.of(T0 + 60 + 300 + 1))  # GC passes
    add(stream, rec(4))                                        # too late
    stream.advance_watermark_to_infinity()
    summary = run_stream(stream, equals([
        ('a', 0, 'ON_TIME', 0, 2, 1),
        ('a', 0, 'LATE', 1, 3, 1),
    ]), trigger='late=1,lateness=5m', check_late=_late_letters(
        (4, ["'a'", '2026-01-01T00:00:00+00:00', '1.000 s after it closed',
             'allowed lateness 5m'])))
    assert summary['window_assignments'] == 4
    assert summary['aggregated'] == 3 and summary['late_kept'] == 1
    assert summary['dropped_late'] == 0


def test_with_no_lateness_a_record_after_the_on_time_pane_is_a_dead_letter():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(1), rec(70))
    stream.advance_watermark_to(Timestamp.of(T0 + 90))
    add(stream, rec(5), rec(75), rec(30))    # two late, one on time
    stream.advance_watermark_to_infinity()
    summary = run_stream(stream, equals([
        ('a', 0, 'ON_TIME', 0, 1, 0), ('a', 60, 'ON_TIME', 0, 2, 0),
    ]), check_late=_late_letters((5, ['no allowed lateness']),
                                 (30, ['30.000 s after it closed'])))
    assert summary['aggregated'] == 3 and summary['late_kept'] == 2
    assert summary['window_assignments'] == 5
    assert summary['dropped_late'] == 0


def test_on_time_then_late_pane_corrects_then_beyond_lateness_is_dropped():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(1), rec(2, status=503))
    stream.advance_watermark_to(Timestamp.of(T0 + 70))         # window closes
    add(stream, rec(3))                                        # late, accepted
    stream.advance_watermark_to(Timestamp.of(T0 + 60 + 300 + 1))  # GC passes
    add(stream, rec(4))                                        # too late
    stream.advance_watermark_to_infinity()
    summary = run_stream(stream, equals([
        ('a', 0, 'ON_TIME', 0, 2, 1),
        ('a', 0, 'LATE', 1, 3, 1),      # accumulating: the corrected total
    ]), trigger='late=1,lateness=5m')
    assert summary['window_assignments'] == 4
    assert summary['aggregated'] == 3
    assert summary['late_accepted'] == 1
    assert summary['dropped_late'] == 1


def test_discarding_late_pane_holds_only_the_late_records():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(1), rec(2))
    stream.advance_watermark_to(Timestamp.of(T0 + 70))
    add(stream, rec(3, status=500))
    stream.advance_watermark_to_infinity()
    summary = run_stream(stream, equals([
        ('a', 0, 'ON_TIME', 0, 2, 0), ('a', 0, 'LATE', 1, 1, 1)]),
        trigger='lateness=5m,discarding')
    assert summary['aggregated'] == 3 and summary['dropped_late'] == 0


def test_early_panes_fire_on_processing_time_and_accumulate():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(1))
    stream.advance_processing_time(11)
    add(stream, rec(2), rec(3))
    stream.advance_processing_time(11)
    stream.advance_watermark_to(Timestamp.of(T0 + 61))
    stream.advance_watermark_to_infinity()
    summary = run_stream(stream, equals([
        ('a', 0, 'EARLY', 0, 1, 0), ('a', 0, 'EARLY', 1, 3, 0),
        ('a', 0, 'ON_TIME', 2, 3, 0)]), trigger='early=10s')
    assert summary['panes_early'] == 2 and summary['panes_on_time'] == 1
    assert summary['aggregated'] == 3


def _early_then_on_time_summing_to(total):
    def check(panes):
        assert [p[2] for p in panes] == ['EARLY', 'ON_TIME'], panes
        assert sum(p[4] for p in panes) == total, panes
    return check


def test_early_panes_discarding_sum_to_the_total():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(1))
    stream.advance_processing_time(11)
    add(stream, rec(2), rec(3))
    stream.advance_watermark_to(Timestamp.of(T0 + 61))
    stream.advance_watermark_to_infinity()
    summary = run_stream(stream, _early_then_on_time_summing_to(3),
                         trigger='early=10s,discarding')
    assert summary['aggregated'] == 3


def _projected(fields, expected, timing=None):
    def check(panes):
        got = [tuple(p[i] for i in fields) for p in panes]
        assert got == expected, got
        if timing:
            assert all(p[2] == timing for p in panes), panes
    return check


def test_out_of_order_records_land_in_their_event_time_windows():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(65, 'b'), rec(5, 'b'), rec(125, 'b'), rec(59.999, 'b'),
        rec(60, 'b'))
    stream.advance_watermark_to_infinity()
    run_stream(stream, _projected((1, 4), [(0, 2), (60, 2), (120, 1)],
                                  'ON_TIME'))


def test_sliding_windows_count_each_record_in_every_window():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(30), rec(90))
    stream.advance_watermark_to_infinity()
    summary = run_stream(
        stream, _projected((1, 4), [(-60, 1), (0, 2), (60, 1)]),
        window='sliding:2m/1m')
    assert summary['window_assignments'] == 4 == summary['aggregated']


def test_sessions_merge_per_key():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(0, 'a'), rec(20, 'a'), rec(200, 'a'), rec(5, 'b'))
    stream.advance_watermark_to_infinity()
    run_stream(stream, _projected(
        (0, 1, 4), [('a', 0, 2), ('a', 200, 1), ('b', 5, 1)]),
        window='session:1m')


def test_a_wrong_expectation_fails_the_pipeline():
    """The in-pipeline checks above can fail: a wrong expectation raises."""
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(1))
    stream.advance_watermark_to_infinity()
    with pytest.raises(Exception, match='ON_TIME'):
        run_stream(stream, equals([('a', 0, 'ON_TIME', 0, 99, 0)]))


def test_early_panes_of_a_live_stream_are_early_whatever_the_clock_says():
    # A live stream: the clock is past the window's end (the watermark lags
    # behind event time) when the processing-time firing comes.  The pane is
    # EARLY because the watermark has not passed the window's end.
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(1), rec(2))
    stream.advance_processing_time(T0 + 75)      # the clock: T0 + 75 s
    stream.advance_watermark_to(Timestamp.of(T0 + 30))
    add(stream, rec(40))
    stream.advance_processing_time(11)
    stream.advance_watermark_to_infinity()
    summary = run_stream(stream, equals([
        ('a', 0, 'EARLY', 0, 2, 0),
        ('a', 0, 'EARLY', 1, 3, 0),
        ('a', 0, 'ON_TIME', 2, 3, 0)]), trigger='early=10s')
    assert summary['panes_early'] == 2 and summary['panes_late'] == 0


def test_a_record_for_a_window_whose_trigger_finished_is_a_dead_letter():
    # No allowed lateness: the ON_TIME pane fires when the watermark reaches
    # the window's end and finishes its trigger.  A record arriving at that
    # very watermark is not expired by Beam's rule (watermark > end), but its
    # window takes nothing more: Beam's driver skips it after merging.
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, rec(1), rec(2))
    stream.advance_watermark_to(Timestamp.of(T0 + 60))
    add(stream, rec(30))
    stream.advance_watermark_to_infinity()
    summary = run_stream(stream, equals([('a', 0, 'ON_TIME', 0, 2, 0)]),
                         check_late=_late_letters(
                             (30, ['its trigger had fired its final pane',
                                   'no allowed lateness'])))
    assert summary['aggregated'] == 2 and summary['late_kept'] == 1
    assert summary['dropped_late'] == 0


@pytest.mark.parametrize('keep_late, window_in_key', [(None, False),
                                                      (300, True)])
def test_carrying_payloads_needs_late_records_kept(keep_late, window_in_key):
    """Payloads travel with records only to a grouping that keeps late
    records (nothing else would read them)."""
    with pytest.raises(ValueError, match='carries_raw needs keep_late'):
        AggregatePerKey(LogStatsFn(), to_service_stats, stats_count, False,
                        JOB, keep_late=keep_late, window_in_key=window_in_key,
                        carries_raw=True)


def test_a_record_read_again_is_kept_out_of_its_windows_final_at_the_horizon():
    """A restart registers a record it reads again, handed on before the
    horizon it resumes was taken, with that horizon (Origin.final_by):
    each of its windows closing (end plus the allowed lateness) at or
    before it holds it in its final pane, so the grouping's count step
    drops (and counts) its assignment there and passes the others; not
    for merging windows (a session's proto-window is not the session).
    The closes compared are those windows.WindowSpec.closes_at gives."""
    from apache_beam.transforms.window import IntervalWindow
    from transforms import aggregate, deadletter
    t0 = 1767225600
    spec = windows.parse_window('sliding:2m/1m')
    lateness = 30.0
    final_by = spec.closes_at(t0 + 10 - 60, lateness)      # T0+90
    assert final_by == t0 + 90
    origin = deadletter.Origin('partition=0&offset=7', final_by=final_by)
    carried = ('svc', ('value', deadletter.Sourced(b'payload', origin)))
    first, second = IntervalWindow(t0 - 60, t0 + 60), \
        IntervalWindow(t0, t0 + 120)
    assert aggregate.closes_at(first, lateness) == final_by
    # pylint: disable=protected-access
    count = aggregate._CountCarried(
        'keepout', lambda value: 1, 'service_stats', True, lateness)
    assert list(count.process(carried, window=first)) == []
    passed = list(count.process(carried, window=second))
    assert [(k, v.value) for k, v in passed] == [('svc', 'value')]
    # a horizon a microsecond before the first window closes keeps nothing
    early = ('svc', ('value', deadletter.Sourced(b'payload', origin._replace(
        final_by=final_by - 1e-6))))
    assert len(list(count.process(early, window=first))) == 1
    merging = aggregate._CountCarried(
        'keepout', lambda value: 1, 'session', False, lateness,
        merging=True)
    assert len(list(merging.process(carried, window=first))) == 1
