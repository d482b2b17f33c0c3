"""kafka:// and pubsub:// URIs: what they accept and the errors they give,
before anything connects (the servers are in tests/integration)."""
import pytest

from transforms import io
from transforms.detectors import Alert
from transforms.io import UriError, _messages, check_uri, kafka
from apache_beam.utils.timestamp import Timestamp


@pytest.mark.parametrize('text, kind', [
    ('kafka://localhost:9092/logs', 'source'),
    ('kafka://a:1,b:2/logs?group=g&start=earliest&stop=end', 'source'),
    ('kafka://a:1/logs?start=2026-01-01T00:00:00Z&stop=idle:30s'
     '&watermark_lag=10s&config.security.protocol=SSL', 'source'),
    ('kafka://a:1/rtp.{table}', 'sink'),
    ('pubsub://projects/my-project/subscriptions/logs-sub', 'source'),
    ('pubsub://projects/my-project/topics/logs?timestamp_attribute=ts'
     '&id_attribute=id&dedup_window=5m', 'source'),
    ('pubsub://projects/my-project/topics/alerts-{table}', 'sink'),
])
def test_valid_uris_pass(text, kind):
    check_uri(text, kind)


@pytest.mark.parametrize('text, kind, message', [
    ('kafka://localhost:9092', 'source', 'expected kafka://HOST:PORT'),
    ('kafka://localhost:9092/logs?stop=soon', 'source', 'stop=.soon.'),
    ('kafka://localhost:9092/logs?start=yesterday', 'source', 'start='),
    ('kafka://localhost:9092/logs?stop=idle:x', 'source', 'stop='),
    ('kafka://localhost:9092/logs?groop=g', 'source', 'unknown parameter'),
    ('kafka://localhost:9092/{table}', 'source', 'one topic'),
    ('kafka://localhost:9092/bad topic', 'sink', 'not a valid name'),
    ('kafka://localhost:9092/t?group=g', 'sink', 'unknown parameter'),
    ('pubsub://my-project/topics/t', 'source', 'expected pubsub://projects'),
    ('pubsub://projects/my-project/subscriptions/s', 'sink', 'to a topic'),
    ('pubsub://projects/my-project/topics/t?dedup_window=x', 'source',
     'dedup_window'),
])
def test_bad_uris_say_why(text, kind, message):
    with pytest.raises(UriError, match=message):
        check_uri(text, kind)


def test_only_reads_that_never_stop_are_unbounded():
    assert io.unbounded('kafka://a:1/t')
    assert io.unbounded('kafka://a:1/t?stop=never')
    assert not io.unbounded('kafka://a:1/t?stop=end')
    assert not io.unbounded('kafka://a:1/t?stop=idle:5s')
    assert io.unbounded('pubsub://projects/my-project/subscriptions/sub')
    assert not io.unbounded('file://x')
    assert not io.unbounded('synthetic://logs')


def test_start_and_stop_specs():
    assert kafka.parse_start('committed') == kafka.StartSpec('committed')
    assert kafka.parse_start('2026-01-01T00:00:01Z') == \
        kafka.StartSpec('time', 1767225601000)
    assert kafka.parse_stop('idle:1m') == kafka.StopSpec('idle', 60.0)
    assert kafka.parse_stop('end').bounded
    assert not kafka.parse_stop('never').bounded


def test_a_row_becomes_a_keyed_json_message_timed_by_its_window_end():
    alert = Alert(key='checkout', metric='error_rate', state='RAISED',
                  value=0.25, threshold=0.05,
                  window_start=Timestamp(1767225600),
                  window_end=Timestamp(1767225660), pane_timing='ON_TIME',
                  pane_index=0)
    message = _messages.to_message(alert, 'rtp.{table}'.replace(
        '{table}', 'alerts'), 'alerts')
    assert message.topic == 'rtp.alerts'
    assert message.key == b'checkout'
    assert message.event_time_ms == 1767225660000
    assert b'"window_end":"2026-01-01T00:01:00Z"' in message.value
    assert _messages.rfc3339(1767225660123) == '2026-01-01T00:01:00.123000Z'


@pytest.mark.parametrize('text', [
    'bigquery://my-project:analytics',
    'bigquery://my-project:analytics.logs_',
    'bigquery://my-project:analytics.logs_?method=file_loads&temp=gs://b/t',
    'bigquery://my-project:analytics.x?method=streaming_inserts&partition=HOUR',
])
def test_valid_bigquery_uris(text):
    check_uri(text, 'sink')


@pytest.mark.parametrize('text, message', [
    ('bigquery://analytics.logs', 'expected bigquery://PROJECT:DATASET'),
    ('bigquery://my-project:analytics.logs?method=fast', 'method must be'),
    ('bigquery://my-project:analytics?partition=WEEK', 'partition must be'),
    ('bigquery://my-project:analytics?table=x', 'unknown parameter'),
])
def test_bad_bigquery_uris_say_why(text, message):
    with pytest.raises(UriError, match=message):
        check_uri(text, 'sink')


def test_bigquery_schemas_and_rows_derive_from_the_record_type():
    from transforms import schemas
    from transforms.deadletter import DeadLetter
    from transforms.io import bigquery
    from transforms.logs.stats import ServiceStats
    schema = {f['name']: (f['type'], f['mode'])
              for f in schemas.bigquery_schema(ServiceStats)['fields']}
    assert schema['service'] == ('STRING', 'REQUIRED')
    assert schema['count'] == ('INT64', 'REQUIRED')
    assert schema['latency_p99_ms'] == ('FLOAT64', 'NULLABLE')
    assert schema['window_start'] == ('TIMESTAMP', 'REQUIRED')
    assert bigquery.partition_field(ServiceStats) == 'window_start'
    assert bigquery.partition_field(DeadLetter) == 'error_time'
    row = schemas.to_bigquery_dict(DeadLetter(
        raw=b'\xff\x00x', stage='decode', reason='r',
        error_time=Timestamp(1767225600.5), source='file://x'))
    assert row['raw'] == '/wB4'                      # base64, as BigQuery reads BYTES
    assert row['error_time'] == '2026-01-01T00:00:00.500000Z'


def test_an_unbounded_partition_read_reports_its_backlog_as_progress():
    spec_key = ('b:1', 'topic', 2, 'group')
    restriction = kafka.PartitionRange(10, kafka.UNBOUNDED_END, spec_key)
    tracker = kafka.PartitionTracker(restriction)
    assert not tracker.is_bounded()
    for offset in range(10, 15):
        assert tracker.try_claim(offset)
    with kafka._BACKLOG_LOCK:  # pylint: disable=protected-access
        kafka._BACKLOG[spec_key] = 42  # pylint: disable=protected-access
    progress = tracker.current_progress()
    assert (progress.completed_work, progress.remaining_work) == (5, 42)
    # A checkpoint keeps the partition: the residual reports progress too.
    primary, residual = tracker.try_split(0)
    assert residual.key == spec_key and primary.stop == residual.start == 15
    assert kafka.PartitionTracker(
        kafka.PartitionRange(0, 100, spec_key)).is_bounded()
