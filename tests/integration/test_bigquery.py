"""The BigQuery sink against a BigQuery emulator started by the tests.

The emulator checks rows more loosely than BigQuery (it stores a missing
REQUIRED value as NULL, for one), so these tests check the wiring: tables and
schemas derived from the record types, partitioning, rows written, and the
refused rows that reach the dead letters; not BigQuery's own validation."""
import itertools
import typing

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.timestamp import Timestamp

from pipelines import logs, run
from transforms import io as transforms_io
from transforms.detectors import Alert

_names = itertools.count()
T0 = 1767225600.0


def dataset(emulator):
    name = f'ds{next(_names)}'
    emulator.client().create_dataset(name)
    return name


def rows_of(emulator, table, order='1'):
    query = f'SELECT * FROM `{emulator.PROJECT}.{table}` ORDER BY {order}'
    return [dict(r) for r in emulator.client().query(query).result()]


def alerts(n):
    return [Alert(key=f'svc{i % 3}', metric='error_rate', state='RAISED',
                  value=0.1 * i, threshold=0.05,
                  window_start=Timestamp(T0 + 86400 * (i % 2) + 60 * i),
                  window_end=Timestamp(T0 + 86400 * (i % 2) + 60 * (i + 1)),
                  pane_timing='ON_TIME', pane_index=0) for i in range(n)]


def write(uri, rows, record_type, table, streaming):
    context = transforms_io.Context(job='test', streaming=streaming)
    sink = transforms_io.open_sink(uri, context)
    options = ['--runner=BundleBasedDirectRunner'] + \
        (['--streaming'] if streaming else [])
    with beam.Pipeline(options=PipelineOptions(options)) as pipeline:
        _ = (pipeline | beam.Create(rows).with_output_types(record_type)
             | sink.write(table, record_type))


@pytest.mark.parametrize('method', ['streaming_inserts', 'file_loads'])
def test_rows_land_in_a_table_derived_from_the_record_type(
        bigquery, tmp_path, method):
    ds = dataset(bigquery)
    rows = alerts(8)
    write(f'bigquery://{bigquery.PROJECT}:{ds}.logs_?method={method}'
          f'&temp={tmp_path}', rows, Alert, 'alerts', streaming=False)
    table = bigquery.client().get_table(f'{bigquery.PROJECT}.{ds}.logs_alerts')
    schema = {f.name: (f.field_type, f.mode) for f in table.schema}
    assert schema['key'] == ('STRING', 'REQUIRED')
    assert schema['value'] == ('FLOAT', 'REQUIRED') or \
        schema['value'] == ('FLOAT64', 'REQUIRED')
    assert schema['window_start'] == ('TIMESTAMP', 'REQUIRED')
    if method == 'streaming_inserts':
        # (A load job that creates the table loses its partitioning on the
        # emulator; BigQuery keeps it.)
        assert table.time_partitioning.field == 'window_start'
        assert table.time_partitioning.type_ == 'DAY'
    found = rows_of(bigquery, f'{ds}.logs_alerts', 'value')
    assert [(r['key'], round(r['value'], 9), r['window_start'].timestamp())
            for r in found] == [
        (a.key, round(a.value, 9), float(a.window_start)) for a in rows]


class Reading(typing.NamedTuple):
    sensor: str
    value: int
    event_time: Timestamp


def test_refused_rows_go_to_the_dead_letter_table(bigquery):
    ds = dataset(bigquery)
    client = bigquery.client()
    # A table whose "value" column is an INT64, fed a text that is no number.
    good = [Reading('s1', 1, Timestamp(T0)), Reading('s2', 2, Timestamp(T0))]
    bad = Reading('s3', 'not-a-number', Timestamp(T0))   # type: ignore
    write(f'bigquery://{bigquery.PROJECT}:{ds}.x_?method=streaming_inserts',
          good + [bad], Reading, 'readings', streaming=True)
    assert sorted(r['sensor'] for r in rows_of(bigquery, f'{ds}.x_readings')) \
        == ['s1', 's2']
    dead = rows_of(bigquery, f'{ds}.x_dead_letter')
    assert len(dead) == 1
    assert dead[0]['stage'] == 'sink.bigquery'
    assert b'not-a-number' in dead[0]['raw']
    assert 'x_readings' in dead[0]['reason'] and 'invalid' in dead[0]['reason']
    table = client.get_table(f'{bigquery.PROJECT}.{ds}.x_dead_letter')
    assert table.time_partitioning.field == 'error_time'


def test_the_logs_job_writes_its_tables_to_bigquery(bigquery, tmp_path):
    ds = dataset(bigquery)
    source = tmp_path / 'in.log'
    lines = [f'{{"ts": "2026-01-01T00:0{i % 3}:1{i % 10}Z", "service": '
             f'"svc{i % 2}", "level": "INFO", "message": "m{i}", '
             f'"latency_ms": {i}}}' for i in range(60)] + ['not a log line']
    source.write_text('\n'.join(lines) + '\n')
    summary = run.run(logs, [
        '--source', f'file://{source}', '--no-summary',
        # Streaming inserts: the emulator's load jobs keep BYTES columns
        # base64-encoded (BigQuery decodes them); load jobs are covered above.
        '--sink', f'bigquery://{bigquery.PROJECT}:{ds}.logs_'
                  f'?method=streaming_inserts'])
    stats = rows_of(bigquery, f'{ds}.logs_service_stats',
                    'service, window_start')
    assert sum(r['count'] for r in stats) == summary['decoded'] == 60
    assert {(r['service'], r['window_start'].minute) for r in stats} == {
        (f'svc{s}', m) for s in range(2) for m in range(3)}
    dead = rows_of(bigquery, f'{ds}.logs_dead_letter')
    assert [d['raw'] for d in dead] == [b'not a log line']
    assert summary['rows_written'] == {'dead_letter': 1,
                                       'service_stats': len(stats)}


def test_the_trades_job_reads_kafka_and_writes_bigquery(bigquery, kafka,
                                                        tmp_path):
    """Kafka in, BigQuery out, against a file replay of the same trades."""
    from pipelines import trades
    from tests.integration.test_kafka import fresh, produce, _synthetic_records
    records = _synthetic_records(3000, seed=5, domain='trades')
    topic = fresh(kafka)
    produce(kafka, topic, records)
    ds = dataset(bigquery)
    summary = run.run(trades, [
        '--source', f'kafka://{kafka.brokers}/{topic}?group=t&stop=end',
        '--sink', f'bigquery://{bigquery.PROJECT}:{ds}.trades_'
                  f'?method=streaming_inserts', '--no-summary'])
    replay = tmp_path / 'trades.jsonl'
    replay.write_bytes(b'\n'.join(p for _, p in records) + b'\n')
    oracle = run.run(trades, ['--source', f'file://{replay}', '--sink',
                              f'parquet://{tmp_path}/replay', '--no-summary'])
    assert summary['read'] == oracle['read'] == len(records)
    assert summary['decoded'] == oracle['decoded']
    import pyarrow.dataset as pa_dataset
    expected = pa_dataset.dataset(f'{tmp_path}/replay/bars').to_table()
    expected = sorted(zip(expected['symbol'].to_pylist(),
                          [t.timestamp() for t in
                           expected['window_start'].to_pylist()],
                          expected['trade_count'].to_pylist(),
                          expected['close'].to_pylist()))
    bars = rows_of(bigquery, f'{ds}.trades_bars', 'symbol, window_start')
    assert sorted((b['symbol'], b['window_start'].timestamp(),
                   b['trade_count'], b['close']) for b in bars) == expected
    assert len(rows_of(bigquery, f'{ds}.trades_dead_letter')) == \
        oracle['dead_lettered'] > 0


def test_a_late_pane_reaches_the_table(bigquery):
    """A row of a window the watermark has passed (a LATE pane, or a pane
    a restart writes again) lands like any other: the streaming inserts'
    own grouping must not drop it as late."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms import window
    ds = dataset(bigquery)
    on_time, late = alerts(2)
    stream = (TestStream().add_elements([
        beam.window.TimestampedValue(on_time, float(on_time.window_start))])
        .advance_watermark_to(float(late.window_end) + 7200)
        .add_elements([beam.window.TimestampedValue(
            late._replace(pane_timing='LATE'), float(late.window_start))])
        .advance_watermark_to_infinity())
    context = transforms_io.Context(job='test', streaming=True)
    sink = transforms_io.open_sink(
        f'bigquery://{bigquery.PROJECT}:{ds}.x_?method=streaming_inserts',
        context)
    options = PipelineOptions(['--runner=BundleBasedDirectRunner',
                               '--streaming'])
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline | stream
             | beam.WindowInto(window.FixedWindows(60),
                               allowed_lateness=3 * 86400)
             .with_output_types(Alert)
             | sink.write('alerts', Alert))
    found = rows_of(bigquery, f'{ds}.x_alerts', 'value')
    assert [(r['key'], r['pane_timing']) for r in found] == [
        (on_time.key, 'ON_TIME'), (late.key, 'LATE')]
    assert all(r['written_at'] is not None for r in found)


def _put(bigquery, table, rows, record_type):
    """``rows`` of ``record_type`` as the sink writes them, each with its
    own ``written_at`` (seconds)."""
    from google.cloud import bigquery as bq
    from transforms.io import bigquery as sink
    schema = sink.table_schema(record_type)['fields']
    client = bigquery.client()
    client.create_table(bq.Table(table, schema=[
        bq.SchemaField(f['name'], f['type'], mode=f['mode'])
        for f in schema]))
    errors = client.insert_rows_json(table, [
        {**sink.schemas.to_bigquery_dict(row),
         'written_at': sink._stamp(at)} for row, at in rows])
    assert not errors


def test_a_roll_back_removes_rows_written_after_the_commit_and_open_windows(
        bigquery):
    """What a restart removes (transforms/io/bigquery.py roll_back): rows
    written after the commit, and rows of windows not final at its horizon
    (end + lateness after it); dead letters only by when they were written;
    absent tables are skipped."""
    from transforms.deadletter import DeadLetter
    from transforms.io import bigquery as sink
    ds = dataset(bigquery)
    committed_at = 1_800_000_000.0
    lateness = 3600.0
    # Windows i: [T0 + 60 i, T0 + 60 (i + 1)); final at the horizon when
    # end + lateness <= horizon, i.e. i <= 4.
    horizon = T0 + 5 * 60 + lateness
    rows = alerts(10)
    rows = [a._replace(window_start=Timestamp(T0 + 60 * i),
                       window_end=Timestamp(T0 + 60 * (i + 1)))
            for i, a in enumerate(rows)]
    written = [(a, committed_at - 10 if i != 2 else committed_at + 1)
               for i, a in enumerate(rows)]
    _put(bigquery, f'{bigquery.PROJECT}.{ds}.j_alerts', written, Alert)
    dead = [DeadLetter(raw=b'x%d' % i, stage='decode', reason='r',
                       error_time=Timestamp(T0 - 86400 * 30), source='s')
            for i in range(3)]
    _put(bigquery, f'{bigquery.PROJECT}.{ds}.j_dead_letter',
         [(dead[0], committed_at - 1), (dead[1], committed_at + 1),
          (dead[2], committed_at - 100)], DeadLetter)
    uri = transforms_io.parse_uri(f'bigquery://{bigquery.PROJECT}:{ds}.j_')
    removed = sink.roll_back(uri, ['alerts', 'service_stats', 'dead_letter'],
                             horizon, committed_at, lateness)
    kept = rows_of(bigquery, f'{ds}.j_alerts', 'window_start')
    assert [r['window_start'].timestamp() for r in kept] == [
        T0 + 60 * i for i in (0, 1, 3, 4)]
    assert sorted(r['raw'] for r in rows_of(bigquery, f'{ds}.j_dead_letter')
                  ) == [b'x0', b'x2']
    assert removed == 6 + 1
    # A run that ended (horizon COMPLETE): only what was written after.
    assert sink.roll_back(uri, ['alerts'], 1e15, committed_at - 50,
                          lateness) == 4


def test_a_roll_back_judges_each_row_by_the_lateness_of_its_grouping(
        bigquery):
    """A job's ROW_LATENESS (trades: price anomalies are judged with no
    allowed lateness): a price row is removed only where its window ends
    after the horizon, a gap row (or a row of any other kind) where its end
    plus the job's lateness is after it; rows written after the commit go
    whatever their window."""
    from transforms.io import bigquery as sink
    from transforms.market.anomalies import Anomaly
    ds = dataset(bigquery)
    committed_at = 1_800_000_000.0
    lateness = 3600.0
    horizon = T0 + 5 * 60

    def row(kind, i):
        return Anomaly('AAPL', kind, Timestamp(T0 + 60 * i), None, None,
                       None, 1.0, Timestamp(T0 + 60 * i),
                       Timestamp(T0 + 60 * (i + 1)), 'ON_TIME', 0)
    # Windows i end at T0 + 60 (i + 1): i <= 4 ends by the horizon (final
    # for prices), none is final for the job's hour of lateness.
    rows = [(row(kind, i), committed_at - 10)
            for kind in ('price', 'gap') for i in (3, 4, 5, 6)]
    rows.append((row('price', 2), committed_at + 1))
    _put(bigquery, f'{bigquery.PROJECT}.{ds}.t_anomalies', rows, Anomaly)
    uri = transforms_io.parse_uri(f'bigquery://{bigquery.PROJECT}:{ds}.t_')
    removed = sink.roll_back(uri, ['anomalies'], horizon, committed_at,
                             lateness, {'anomalies': ('kind', {'price': 0.0})})
    kept = rows_of(bigquery, f'{ds}.t_anomalies', 'window_start')
    assert [(r['kind'], r['window_start'].timestamp()) for r in kept] == [
        ('price', T0 + 60 * 3), ('price', T0 + 60 * 4)]
    assert removed == len(rows) - 2
    # Without the declaration, every window is open at the horizon.
    _put(bigquery, f'{bigquery.PROJECT}.{ds}.u_anomalies', rows, Anomaly)
    assert sink.roll_back(
        transforms_io.parse_uri(f'bigquery://{bigquery.PROJECT}:{ds}.u_'),
        ['anomalies'], horizon, committed_at, lateness) == len(rows)


def test_a_restart_into_bigquery_keeps_the_price_anomalies_judged_before_it(
        bigquery, kafka):
    """The Kafka restart of test_kafka.py's price-anomaly case into a
    BigQuery dataset: an uninterrupted run's rows (all written before the
    killed run's last commit, offset 0, whose horizon is 1.5 h into the
    stream and nothing read before its look), then the resumed run into the same tables: the price rows
    equal the uninterrupted run's, none lost, none twice (before, the
    DELETE took the windows ending within the job's lateness before the
    horizon, never judged again)."""
    import collections
    from pipelines import trades
    from tests.integration.test_kafka import (TRADES_RESTART, TRADES_STREAM,
                                              fresh, killed_at, produce)
    from transforms.io import synthetic
    records = list(synthetic.generate(
        transforms_io.parse_uri(TRADES_STREAM)).records())
    topic = fresh(kafka, partitions=1)
    produce(kafka, topic, records)
    ds = dataset(bigquery)
    sink = ['--sink', f'bigquery://{bigquery.PROJECT}:{ds}.t_'
                      f'?method=streaming_inserts']

    def prices():
        return collections.Counter(
            (r['symbol'], r['event_time'], r['trade_id'], r['window_end'],
             r['price']) for r in rows_of(bigquery, f'{ds}.t_anomalies')
            if r['kind'] == 'price')
    run.run(trades, TRADES_RESTART + sink + [
        '--source', f'kafka://{kafka.brokers}/{topic}?group=whole'
                    f'&stop=idle:2s'])
    expected = prices()
    horizon = min(t for t, _ in records) + 5400 + 150
    assert any(horizon - 3600 < end.timestamp() <= horizon
               for _, _, _, end, _ in expected)
    summary = run.run(trades, TRADES_RESTART + sink + [
        '--source', killed_at(kafka, topic, 'resumed', horizon)])
    assert summary['read'] == len(records)
    assert prices() == expected
