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
