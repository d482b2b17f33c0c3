"""ThresholdAlerts: one alert per breach, a recovery when it ends, in event-time
order whatever the arrival order."""
import pickle
import random

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.detectors import RAISED, RECOVERED, Rule, ThresholdAlerts
from transforms.logs.stats import ServiceStats

T0 = 1767225600
RULES = [Rule('error_rate', 0.05, hysteresis=0.2, min_count=10)]


def row(minute, rate, service='a', timing='ON_TIME', index=0, count=100):
    start = T0 + 60 * minute
    return ServiceStats(
        service, Timestamp.of(start), Timestamp.of(start + 60), timing, index,
        count, int(rate * count), rate, 0, None, None, None, None, None, None,
        None)


def stamped(r):
    return TimestampedValue(r, Timestamp(micros=r.window_end.micros - 1))


def alerts_of(rows):
    """(key, metric, state, window minute) of the alerts, in arrival order."""
    return rows | beam.Map(lambda a: (
        a.key, a.metric, a.state, (a.window_start.micros // 10**6 - T0) // 60))


def test_one_alert_per_breach_and_one_recovery_in_a_stream():
    rates = [0.01, 0.10, 0.20, 0.045, 0.03, 0.01, 0.30]
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    for minute, rate in enumerate(rates):
        stream.add_elements([stamped(row(minute, rate, timing='EARLY')),
                             stamped(row(minute, rate, index=1))])
        stream.advance_watermark_to(Timestamp.of(T0 + 60 * (minute + 1) + 1))
    stream.advance_watermark_to_infinity()
    with TestPipeline(options=PipelineOptions(
            runner='BundleBasedDirectRunner', streaming=True)) as p:
        out = p | stream | ThresholdAlerts(lambda r: r.service, RULES, 'det')
        assert_that(alerts_of(out), equal_to([
            ('a', 'error_rate', RAISED, 1),      # 0.10 > 0.05
            # 0.20 stays raised; 0.045 is above the recovery level 0.04
            ('a', 'error_rate', RECOVERED, 4),   # 0.03 < 0.04
            ('a', 'error_rate', RAISED, 6),      # a new breach
        ]))


def test_batch_replay_in_any_order_gives_the_same_alerts():
    rows = [row(m, r, service=s)
            for s in ('a', 'b')
            for m, r in enumerate([0.0, 0.5, 0.5, 0.0, 0.0])]
    rows.append(row(2, 0.9, service='c', count=5))       # below min_count
    random.Random(7).shuffle(rows)
    # All rows at once, shuffled, then the end of input: what a batch replay
    # looks like to the detector.
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    stream.add_elements([stamped(r) for r in rows])
    # (The watermark passes the last window before the end of input: Beam's
    # local runner closes assert_that before timers firing at the final
    # watermark jump have emitted.  The batch job is checked end to end.)
    stream.advance_watermark_to(Timestamp.of(T0 + 3600))
    stream.advance_watermark_to_infinity()
    with TestPipeline(options=PipelineOptions(
            runner='BundleBasedDirectRunner', streaming=True)) as p:
        out = p | stream | ThresholdAlerts(lambda r: r.service, RULES, 'det')
        assert_that(alerts_of(out), equal_to([
            ('a', 'error_rate', RAISED, 1), ('a', 'error_rate', RECOVERED, 3),
            ('b', 'error_rate', RAISED, 1), ('b', 'error_rate', RECOVERED, 3),
        ]))


def test_a_late_pane_of_an_evaluated_window_does_not_flap():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    stream.add_elements([stamped(row(0, 0.10))])
    stream.advance_watermark_to(Timestamp.of(T0 + 61))
    stream.add_elements([stamped(row(1, 0.10))])
    stream.advance_watermark_to(Timestamp.of(T0 + 121))
    # A LATE correction of minute 0 saying it was fine after all: ignored.
    stream.add_elements([stamped(row(0, 0.0, timing='LATE', index=1))])
    stream.advance_watermark_to_infinity()
    with TestPipeline(options=PipelineOptions(
            runner='BundleBasedDirectRunner', streaming=True)) as p:
        out = p | stream | ThresholdAlerts(lambda r: r.service, RULES, 'det')
        assert_that(alerts_of(out), equal_to([('a', 'error_rate', RAISED, 0)]))



def _oracle(rows):
    """The alerts the rules define, by a plain loop: per service, windows
    in order, EARLY panes and rows below min_count not judged."""
    rule = RULES[0]
    out = []
    for service in sorted({r.service for r in rows}):
        breached = False
        for r in sorted((r for r in rows if r.service == service
                         and r.pane_timing != 'EARLY'),
                        key=lambda r: r.window_end):
            if r.count < rule.min_count:
                continue
            minute = (r.window_start.micros // 10**6 - T0) // 60
            if not breached and r.error_rate > rule.threshold:
                breached = True
                out.append((service, 'error_rate', RAISED, minute))
            elif breached and r.error_rate < rule.recover_below:
                breached = False
                out.append((service, 'error_rate', RECOVERED, minute))
    return out


def test_bounded_mode_gives_the_alerts_the_timers_give():
    """ThresholdAlerts(bounded=True) (a batch run: a key's rows grouped and
    judged at once, no state or timers) and the timer-driven detector, on
    the same shuffled rows (flapping rates, rows below min_count, EARLY
    panes), against a plain loop over the rules."""
    rng = random.Random(11)
    rows = []
    for service in ('a', 'b', 'c'):
        for minute in range(40):
            rows.append(row(minute, rng.choice([0.0, 0.01, 0.045, 0.06, 0.3]),
                            service=service, count=rng.choice([5, 100])))
            if rng.random() < 0.2:
                rows.append(row(minute, 0.9, service=service,
                                timing='EARLY'))
    rng.shuffle(rows)
    expected = _oracle(rows)
    assert {a[2] for a in expected} == {RAISED, RECOVERED}
    with TestPipeline(options=PipelineOptions(
            runner='BundleBasedDirectRunner')) as p:
        out = p | beam.Create(rows) | ThresholdAlerts(
            lambda r: r.service, RULES, 'det', bounded=True)
        assert_that(alerts_of(out), equal_to(expected), label='Bounded')
        # batched: the same rows in lists of 7 (a key's rows spread over
        # several lists, which meet at the shuffle).
        # Every other list pickled (bytes), as a producer that pickles its
        # lists once sends them.
        batches = [rows[i:i + 7] if i % 14 else
                   pickle.dumps(rows[i:i + 7])
                   for i in range(0, len(rows), 7)]
        assert any(isinstance(b, bytes) for b in batches)
        out = p | 'Batches' >> beam.Create(batches) | 'Batched' >> \
            ThresholdAlerts(lambda r: r.service, RULES, 'det', bounded=True,
                            batched=True)
        assert_that(out | 'BatchedAlerts' >> beam.Map(lambda a: (
            a.key, a.metric, a.state,
            (a.window_start.micros // 10**6 - T0) // 60)),
            equal_to(expected), label='Batched')
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    stream.add_elements([stamped(r) for r in rows])
    stream.advance_watermark_to(Timestamp.of(T0 + 7200))
    stream.advance_watermark_to_infinity()
    with TestPipeline(options=PipelineOptions(
            runner='BundleBasedDirectRunner', streaming=True)) as p:
        out = p | stream | ThresholdAlerts(lambda r: r.service, RULES, 'det')
        assert_that(alerts_of(out), equal_to(expected), label='Timers')
