"""Faults of real servers while a job runs: the Kafka broker restarted (the
job goes on, nothing is lost), a topic deleted under the Kafka sink, a
BigQuery endpoint that refuses (one line naming the sink and the cause)."""
import threading
import time

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import logs, run
from transforms import io as transforms_io
from transforms.io import kafka as kafka_io
from transforms.io import synthetic
from transforms.detectors import Alert
from apache_beam.utils.timestamp import Timestamp


def _records(events, seed):
    uri = transforms_io.parse_uri(
        f'synthetic://logs?events={events}&seed={seed}')
    return list(synthetic.generate(uri).records())


def _produce(kafka, topic, records):
    publisher = kafka_io.Publisher(kafka.brokers)
    for t, payload in records:
        publisher.send(topic, payload, timestamp_ms=int(t * 1000))
    publisher.flush(60)


def _stats(directory):
    table = ds.dataset(f'{directory}/service_stats').to_table().to_pandas()
    return table.groupby(['service', 'window_start'])['count'].sum()


def test_a_broker_restarted_mid_run_loses_nothing(kafka, tmp_path):
    records = _records(3000, seed=5)
    first = 1800
    kafka.create_topic('restarted', 2)
    _produce(kafka, 'restarted', records[:first])
    result, args, _ = run.start(logs, [
        '--source', f'kafka://{kafka.brokers}/restarted?group=g&'
        f'stop=idle:30s', '--trigger', 'default', '--sink',
        f'parquet://{tmp_path}/live', '--no-summary'])
    started = time.time()
    time.sleep(3)
    kafka.server.restart()                 # same port, same data
    _produce(kafka, 'restarted', records[first:])
    summary = run.finish(logs, result, args, started)

    replay = tmp_path / 'all.log'
    replay.write_bytes(b'\n'.join(p for _, p in records) + b'\n')
    oracle = run.run(logs, ['--source', f'file://{replay}', '--trigger',
                            'default', '--sink', f'parquet://{tmp_path}/ref',
                            '--no-summary'])
    assert summary['read'] == len(records)
    assert summary['balanced']
    assert summary['decoded'] == oracle['decoded']
    assert _stats(tmp_path / 'live').astype(int).to_dict() == \
        _stats(tmp_path / 'ref').astype(int).to_dict()


_deleted = threading.Event()


class _DeleteTopicAt(beam.DoFn):
    """Passes rows on; at row ``at`` deletes the topic (once per test)."""

    def __init__(self, brokers, topic, at):
        self._brokers, self._topic, self._at = brokers, topic, at

    def process(self, row):
        if row.pane_index == self._at and not _deleted.is_set():
            from confluent_kafka.admin import AdminClient  # pylint: disable=import-outside-toplevel
            time.sleep(1)                  # what came before is delivered
            admin = AdminClient({'bootstrap.servers': self._brokers})
            for future in admin.delete_topics([self._topic]).values():
                future.result(30)
            _deleted.set()
            time.sleep(1)
        yield row


def _alerts(n):
    return [Alert(key='svc', metric='error_rate', state='RAISED', value=0.5,
                  threshold=0.05, window_start=Timestamp(1767225600 + 60 * i),
                  window_end=Timestamp(1767225660 + 60 * i),
                  pane_timing='ON_TIME', pane_index=i) for i in range(n)]


def _messages(brokers, topic):
    """Every message value of a topic (read from the start to its end)."""
    from confluent_kafka import Consumer, TopicPartition  # pylint: disable=import-outside-toplevel
    consumer = Consumer({'bootstrap.servers': brokers, 'group.id': 'check',
                         'enable.auto.commit': False})
    try:
        partitions = consumer.list_topics(topic, timeout=10) \
            .topics[topic].partitions
        values = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10)
            consumer.assign([TopicPartition(topic, p, low)])
            while low < high:
                message = consumer.poll(10)
                assert message is not None and message.error() is None
                values.append(message.value())
                low = message.offset() + 1
        return values
    finally:
        consumer.close()


def test_a_topic_deleted_under_the_sink_loses_no_row(kafka):
    """The producer of the failed bundle stops on a fatal error; the runner
    retries the bundle with a new one, the broker makes the topic again (it
    creates topics on first write) and every row is written: at least
    once, none lost.  (A broker that does not create topics refuses the
    retried rows: the job then stops with one line naming the sink, as the
    unit of :func:`run.io_failure` shows for a failing sink step.)"""
    _deleted.clear()
    kafka.create_topic('doomed', 1)
    uri = f'kafka://{kafka.brokers}/doomed'
    sink = transforms_io.open_sink(uri, transforms_io.Context(job='test'))
    pipeline = beam.Pipeline(options=PipelineOptions(
        ['--runner=BundleBasedDirectRunner']))
    rows = _alerts(40)
    _ = (pipeline
         | beam.Create(rows, reshuffle=False).with_output_types(Alert)
         | 'Delete' >> beam.ParDo(_DeleteTopicAt(kafka.brokers, 'doomed', 20))
         .with_output_types(Alert)
         | 'WriteAlerts' >> sink.write('alerts', Alert))
    assert transforms_io.io_steps(pipeline) == {'WriteAlerts': uri}
    pipeline.run().wait_until_finish()
    assert _deleted.is_set()
    import orjson  # pylint: disable=import-outside-toplevel
    written = {orjson.loads(v)['pane_index'] for v in
               _messages(kafka.brokers, 'doomed')}
    assert written == {row.pane_index for row in rows}


def test_a_missing_bigquery_dataset_is_refused_before_the_run(bigquery,
                                                              capsys):
    uri = f'bigquery://{bigquery.PROJECT}:no_such_dataset.logs_'
    with pytest.raises(SystemExit) as exit_info:
        run.run(logs, ['--source', 'synthetic://logs?events=50',
                       '--sink', uri])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f'python -m pipelines logs: error: argument --sink: {uri}: no '
        f'dataset \'no_such_dataset\' in project \'{bigquery.PROJECT}\'']


def test_a_bigquery_endpoint_that_stops_answering_is_one_line(bigquery,
                                                              capsys):
    bigquery.client().create_dataset('refusing')
    uri = f'bigquery://{bigquery.PROJECT}:refusing.logs_'
    result, args, _ = run.start(logs, [
        '--source', 'synthetic://logs?events=300&seed=2', '--sink', uri,
        '--no-summary'])
    bigquery.server.stop()             # after the check, before the writes
    try:
        with pytest.raises(SystemExit) as exit_info:
            run.finish(logs, result, args)
    finally:
        bigquery.server.start()
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f'python -m pipelines logs: error: --sink {uri}: ')
    print(f'\n{lines[0]}')      # for the record (pytest -s)


def _committed(kafka, topic, group, partitions):
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    consumer = confluent_kafka.Consumer({'bootstrap.servers': kafka.brokers,
                                         'group.id': group})
    try:
        offsets = consumer.committed(
            [confluent_kafka.TopicPartition(topic, p)
             for p in range(partitions)], timeout=30)
    finally:
        consumer.close()
    return sum(max(0, tp.offset) for tp in offsets)


def test_a_sink_failing_mid_run_commits_no_offset_of_unwritten_output(
        kafka, tmp_path, capsys):
    records = _records(600, seed=8)
    kafka.create_topic('unwritten', 2)
    _produce(kafka, 'unwritten', records)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'dead_letter').write_text('in the way')   # no dead letter written
    with pytest.raises(SystemExit) as exit_info:
        run.run(logs, ['--source', f'kafka://{kafka.brokers}/unwritten?'
                       f'group=unwritten&stop=idle:3s', '--trigger',
                       'default', '--sink', f'parquet://{out}'])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(
        f'python -m pipelines logs: error: --sink parquet://{out}: ')
    assert _committed(kafka, 'unwritten', 'unwritten', 2) == 0


def test_a_missing_pubsub_topic_is_refused_before_the_run(pubsub, capsys):
    uri = f'pubsub://projects/{pubsub.PROJECT}/topics/no-such-topic'
    with pytest.raises(SystemExit) as exit_info:
        run.run(logs, ['--source', 'synthetic://logs?events=50',
                       '--alerts', uri])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f'python -m pipelines logs: error: argument --alerts: {uri}: no such '
        f'topic']
    pubsub.topic('now-there')            # an existing one passes the check
    from transforms.io import pubsub as pubsub_io  # pylint: disable=import-outside-toplevel
    pubsub_io.preflight_sink(transforms_io.parse_uri(
        f'pubsub://projects/{pubsub.PROJECT}/topics/now-there'))
