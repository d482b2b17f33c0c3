"""Template mining in a stream: windowed template rows against pandas, the
new/changed announcements, and rate alerts against an EWMA."""
import apache_beam as beam
import pandas as pd
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms import windows
from transforms.aggregate import AggregatePerKey
from transforms.logs import template_mining as tm
from transforms.logs import templates
from transforms.logs.records import LogRecord

T0 = 1767225600


def record(second, service, message):
    return LogRecord(Timestamp.of(T0 + second), service, 'INFO', None, None,
                     '', message, 'json')


def streaming():
    return TestPipeline(options=PipelineOptions(
        runner='BundleBasedDirectRunner', streaming=True))


def stream_of(records, step=30):
    """Records in event-time order, the watermark following every ``step`` s."""
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.of(T0))
    for r in sorted(records, key=lambda r: r.event_time):
        stream.add_elements([TimestampedValue((r.service, r), r.event_time)])
    return stream.advance_watermark_to_infinity()


# Variables are numbers from the first line on, so each message's template is
# known in advance (the oracle below computes it from the text alone).
RECORDS = (
    [record(s, 'hdfs', f'Deleting block blk_{s} file /data/{s}')
     for s in range(0, 170, 7)] +
    [record(s, 'hdfs', f'Served block blk_{s} to 10.0.0.{s % 9}')
     for s in range(3, 130, 11)] +
    [record(s, 'sshd', f'Accepted password for user{s} port {s + 1000} ssh2')
     for s in range(5, 175, 13)])


def mined_rows(p, records, min_count=3):
    mined = p | stream_of(records) | tm.MineTemplates(min_count, 'test')
    rows = (mined.hits
            | beam.Map(lambda h: (h.template_id, h))
            | windows.ApplyWindow(windows.parse_window('fixed:60s'),
                                  windows.parse_trigger('default'))
            | AggregatePerKey(tm.TemplateStatsFn(), tm.template_stats_row,
                              tm.template_count, False, 'test'))
    return mined, rows


def test_templates_rows_match_pandas():
    frame = pd.DataFrame({
        'service': [r.service for r in RECORDS],
        'template': [' '.join(templates.tokenize(r.message)) for r in RECORDS],
        't': [r.event_time.micros // 10**6 for r in RECORDS],
        'message': [r.message for r in RECORDS]})
    frame['window'] = (frame.t - T0) // 60 * 60 + T0
    first = frame.sort_values(['t', 'message']).groupby(
        ['service', 'template', 'window']).first()
    expected = [
        (svc, templates.template_id(svc, text), text, win - T0, n,
         int(first.loc[(svc, text, win), 't']) - T0, t_max - T0,
         first.loc[(svc, text, win), 'message'])
        for (svc, text, win), n, t_max in zip(
            frame.groupby(['service', 'template', 'window']).size().index,
            frame.groupby(['service', 'template', 'window']).size(),
            frame.groupby(['service', 'template', 'window']).t.max())]
    assert len(expected) == 9
    with streaming() as p:
        _, rows = mined_rows(p, RECORDS)
        assert_that(rows | beam.Map(lambda r: (
            r.service, r.template_id, r.template,
            r.window_start.micros // 10**6 - T0, r.count,
            r.first_seen.micros // 10**6 - T0,
            r.last_seen.micros // 10**6 - T0, r.example)),
            equal_to(expected), label='rows')


def test_new_template_announced_once_and_changes_after_it():
    records = (
        # Constant "alice" becomes a variable after the announcement (3).
        [record(i, 'app', 'login succeeded for user alice from the web form')
         for i in range(3)] +
        [record(10, 'app', 'login succeeded for user bob from the web form')] +
        # Generalises before it is announced: no template_changed.
        [record(20, 'app', 'cache miss for key red in region west now'),
         record(21, 'app', 'cache miss for key blue in region west now')] +
        [record(22 + i, 'app', 'cache miss for key green in region west now')
         for i in range(3)])
    alice = 'login succeeded for user alice from the web form'
    anyone = 'login succeeded for user <*> from the web form'
    cache = 'cache miss for key <*> in region west now'
    with streaming() as p:
        mined, _ = mined_rows(p, records)
        assert_that(mined.alerts | beam.Map(lambda a: (
            a.kind, a.template, a.template_id, a.previous_id, a.count,
            a.time.micros // 10**6 - T0)), equal_to([
                (tm.NEW_TEMPLATE, alice, templates.template_id('app', alice),
                 '', 3, 2),
                (tm.TEMPLATE_CHANGED, anyone,
                 templates.template_id('app', anyone),
                 templates.template_id('app', alice), 4, 10),
                (tm.NEW_TEMPLATE, cache, templates.template_id('app', cache),
                 '', 3, 22),
            ]), label='alerts')


def stats_row(minute, count, template_id='t1', service='svc'):
    start = Timestamp.of(T0 + 60 * minute)
    return tm.TemplateStats(service, template_id, 'text ' + template_id,
                            start, start + 60, 'ON_TIME', 0, count, start,
                            start, 'example')


def test_rate_alerts_against_the_ewma():
    counts = [10, 10, 10, 10, 10, 60, 55, 10, 10, 1, 10]
    rows = [stats_row(m, c) for m, c in enumerate(counts)]
    # A second template present only in minute 0..4 (then 0: a drop), and a
    # sparse one never judged.
    rows += [stats_row(m, 20, 't2') for m in range(5)]
    rows += [stats_row(m, 1 + m % 2, 't3') for m in range(11)]
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.of(T0))
    for minute in range(len(counts)):
        stream.add_elements([TimestampedValue(r, r.window_end - 1e-6)
                             for r in rows
                             if r.window_start == Timestamp.of(T0 + 60 * minute)])
        stream.advance_watermark_to(Timestamp.of(T0 + 60 * (minute + 1)))
    stream.advance_watermark_to_infinity()
    with streaming() as p:
        alerts = p | stream | tm.TemplateRateAlerts(
            factor=4.0, alpha=0.3, warmup=5, min_count=5, job='test')
        assert_that(alerts | beam.Map(lambda a: (
            a.template_id, a.kind, (a.window_start.micros // 10**6 - T0) // 60,
            a.count)), equal_to([
                ('t1', tm.RATE_JUMP, 5, 60),    # 60 > 4 x 10
                # 55 is still a jump: no second alert for one excursion
                ('t1', tm.RATE_DROP, 9, 1),     # 1 < EWMA / 4
                ('t2', tm.RATE_DROP, 5, 0),     # silent after minute 4
            ]), label='rate')


def test_template_stats_combine_is_order_free():
    hits = [tm.TemplateHit('s', 'id', 'x <*>', Timestamp.of(T0 + i), f'x {i % 3}')
            for i in (5, 1, 9, 1, 3)]
    fn = tm.TemplateStatsFn()
    one = fn.add_inputs(fn.create_accumulator(), hits)
    parts = [fn.add_inputs(fn.create_accumulator(), hits[i::2]) for i in (0, 1)]
    assert fn.merge_accumulators(parts) == one
    assert (one.count, one.first_seen, one.last_seen, one.example) == (
        5, Timestamp.of(T0 + 1), Timestamp.of(T0 + 9), 'x 1')
