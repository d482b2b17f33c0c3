"""The Kafka source and sink against a real Kafka-protocol broker (noida-db),
started by the tests on a loopback port."""
import itertools

import apache_beam as beam
import numpy as np
import orjson
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import logs, run
from transforms import io as transforms_io
from transforms.detectors import Alert
from transforms.io import synthetic
from apache_beam.utils.timestamp import Timestamp

_names = itertools.count()
T0 = 1767225600.0     # 2026-01-01T00:00:00Z


def fresh(kafka_broker, partitions=4):
    topic = f'topic-{next(_names)}'
    kafka_broker.create_topic(topic, partitions)
    return topic


def produce(kafka_broker, topic, records, key=None):
    """records: (event_time_seconds, payload) pairs, in order."""
    import confluent_kafka
    producer = confluent_kafka.Producer({'bootstrap.servers':
                                         kafka_broker.brokers})
    for i, (seconds, payload) in enumerate(records):
        producer.produce(topic, value=payload,
                         key=(key or str(i)).encode(),
                         timestamp=int(seconds * 1000))
    assert producer.flush(30) == 0


def killed_past_every_window(kafka_broker, records, group):
    """``records`` on a new one-partition topic, and the last commit a
    killed run of ``group`` left: offset 0 (nothing read before its look),
    every window of the stream final at its horizon (a day after the last
    record), taken a minute from now (dead letters a test writes predate
    it).  The source URI that resumes it."""
    topic = fresh(kafka_broker, partitions=1)
    produce(kafka_broker, topic, records)
    return killed_at(kafka_broker, topic, group,
                     max(float(t) for t, _ in records) + 86400)


def killed_at(kafka_broker, topic, group, horizon, read=0):
    """The last commit a killed run of ``group`` left on the one-partition
    ``topic``: offset 0, ``horizon``, ``read`` records read before its look
    (0: none), taken a minute from now (what a test puts in the sink
    predates it).  The source URI that resumes it."""
    import time
    import confluent_kafka
    from transforms.io import _kafka_commits
    consumer = confluent_kafka.Consumer({
        'bootstrap.servers': kafka_broker.brokers, 'group.id': group})
    try:
        consumer.commit(offsets=[confluent_kafka.TopicPartition(
            topic, 0, 0, metadata=_kafka_commits.metadata(
                horizon, time.time() + 60, read))], asynchronous=False)
    finally:
        consumer.close()
    return f'kafka://{kafka_broker.brokers}/{topic}?group={group}&stop=idle:2s'


def read_all(uri, streaming=False, runner='BundleBasedDirectRunner'):
    """Values and timestamps a pipeline reads from a kafka:// source."""
    options = PipelineOptions([f'--runner={runner}']
                              + (['--streaming'] if streaming else []))
    context = transforms_io.Context(
        job='test', streaming=streaming,
        finalizes_bundles=runner == 'FnApiRunner')
    run_id = next(_names)
    _FOUND[run_id] = []
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline | transforms_io.open_source(uri, context)
             | beam.Map(_keep, run_id))
    return _FOUND.pop(run_id)


# What the pipelines read, by run (the in-process runners share this module).
_FOUND = {}


def _keep(value, run_id, timestamp=beam.DoFn.TimestampParam):
    _FOUND[run_id].append((value, float(timestamp)))


def committed(kafka_broker, topic, group, partitions=4):
    import confluent_kafka
    consumer = confluent_kafka.Consumer({'bootstrap.servers':
                                         kafka_broker.brokers,
                                         'group.id': group})
    try:
        offsets = consumer.committed(
            [confluent_kafka.TopicPartition(topic, p)
             for p in range(partitions)], timeout=30)
    finally:
        consumer.close()
    return sum(max(0, tp.offset) for tp in offsets)


# ---------------------------------------------------------------- the source

@pytest.mark.parametrize('runner', ['BundleBasedDirectRunner', 'FnApiRunner'])
def test_a_bounded_read_gives_every_record_with_its_timestamp(kafka, runner):
    topic = fresh(kafka)
    records = [(T0 + i * 0.5, f'r{i}'.encode()) for i in range(300)]
    produce(kafka, topic, records)
    found = read_all(f'kafka://{kafka.brokers}/{topic}?group=g&stop=end',
                     runner=runner)
    assert sorted(found) == sorted((p, t) for t, p in records)
    # What was emitted is committed for the group: all 300.
    assert committed(kafka, topic, 'g') == 300


def test_a_second_read_of_the_group_resumes_after_the_committed_offsets(kafka):
    topic = fresh(kafka)
    first = [(T0 + i, f'a{i}'.encode()) for i in range(120)]
    produce(kafka, topic, first)
    uri = f'kafka://{kafka.brokers}/{topic}?group=resume&stop=end'
    assert sorted(p for p, _ in read_all(uri)) == sorted(p for _, p in first)
    second = [(T0 + 200 + i, f'b{i}'.encode()) for i in range(80)]
    produce(kafka, topic, second)
    assert sorted(p for p, _ in read_all(uri)) == sorted(p for _, p in second)
    assert read_all(uri) == []           # nothing new: nothing read
    # Another group starts from the beginning; start=latest reads nothing.
    other = f'kafka://{kafka.brokers}/{topic}?group=other&stop=end'
    assert len(read_all(other)) == 200
    assert read_all(f'kafka://{kafka.brokers}/{topic}?group=late&stop=end'
                    f'&start=latest') == []


def test_start_at_a_time_reads_from_the_first_record_at_or_after_it(kafka):
    topic = fresh(kafka, partitions=2)
    records = [(T0 + i * 60, f'm{i}'.encode()) for i in range(10)]
    produce(kafka, topic, records)
    found = read_all(f'kafka://{kafka.brokers}/{topic}?group=t&stop=end'
                     f'&start=2026-01-01T00:05:00Z')
    assert sorted(p for p, _ in found) == sorted(
        p for t, p in records if t >= T0 + 300)


def test_an_idle_stream_ends_after_its_idle_time(kafka):
    topic = fresh(kafka)
    records = [(T0 + i, f's{i}'.encode()) for i in range(50)]
    produce(kafka, topic, records)
    found = read_all(f'kafka://{kafka.brokers}/{topic}?group=idle'
                     f'&stop=idle:1s', streaming=True)
    assert sorted(found) == sorted((p, t) for t, p in records)


def test_a_missing_topic_fails_the_read_with_its_name(kafka):
    with pytest.raises(Exception, match='no-such-topic'):
        read_all(f'kafka://{kafka.brokers}/no-such-topic?stop=end')


# ------------------------------------------------------------------ the sink

def test_the_sink_writes_one_json_message_per_row(kafka):
    topic = fresh(kafka, partitions=2)
    alerts = [Alert(key=f'svc{i % 2}', metric='error_rate', state='RAISED',
                    value=0.5 + i, threshold=0.1,
                    window_start=Timestamp(T0 + 60 * i),
                    window_end=Timestamp(T0 + 60 * (i + 1)),
                    pane_timing='ON_TIME', pane_index=0)
              for i in range(6)]
    context = transforms_io.Context(job='test', run_id='20260101T000000Z')
    sink = transforms_io.open_sink(f'kafka://{kafka.brokers}/{topic}',
                                   context)
    with beam.Pipeline(options=PipelineOptions(
            ['--runner=BundleBasedDirectRunner'])) as pipeline:
        _ = (pipeline | beam.Create(alerts).with_output_types(Alert)
             | sink.write('alerts', Alert))
    import confluent_kafka
    consumer = confluent_kafka.Consumer({
        'bootstrap.servers': kafka.brokers, 'group.id': 'check',
        'auto.offset.reset': 'earliest'})
    consumer.assign([confluent_kafka.TopicPartition(topic, p, 0)
                     for p in range(2)])
    messages = []
    while len(messages) < 6:
        batch = consumer.consume(10, timeout=10)
        assert batch, f'only {len(messages)} of 6 messages arrived'
        messages += [m for m in batch if m.error() is None]
    consumer.close()
    by_value = {orjson.loads(m.value())['value']: m for m in messages}
    assert sorted(by_value) == [0.5 + i for i in range(6)]
    for i, alert in enumerate(alerts):
        m = by_value[alert.value]
        row = orjson.loads(m.value())
        assert row['key'] == alert.key
        assert row['window_start'] == f'2026-01-01T00:{i:02d}:00Z'
        assert m.key() == alert.key.encode()
        assert dict(m.headers()) == {'table': b'alerts',
                                     'run': b'20260101T000000Z'}
        assert m.timestamp()[1] == int((T0 + 60 * (i + 1)) * 1000)
    # One entity's messages share a partition (ordered per key).
    for key in ('svc0', 'svc1'):
        assert len({m.partition() for m in messages
                    if m.key() == key.encode()}) == 1


# --------------------------------------------------- a job, stopped and restarted

def _synthetic_records(events, seed, domain='logs'):
    uri = transforms_io.parse_uri(
        f'synthetic://{domain}?events={events}&seed={seed}')
    return list(synthetic.generate(uri).records())


def _stats(directory):
    table = ds.dataset(f'{directory}/service_stats').to_table().to_pandas()
    return table.groupby(['service', 'window_start'])['count'].sum()


def _dead(directory):
    try:
        return ds.dataset(f'{directory}/dead_letter').count_rows()
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize('streaming', [False, True],
                         ids=['bounded', 'streaming'])
def test_a_stopped_and_restarted_job_counts_every_record_once(kafka, tmp_path,
                                                              streaming):
    """N records, a run that stops once the topic is idle, M more, a second
    run of the same consumer group: each record is counted exactly once, and
    the two runs' counts add up to a file replay of all N + M records (in a
    stream too: the second run's watermark starts afresh, its records are
    not late)."""
    topic = fresh(kafka)
    records = _synthetic_records(4000, seed=11)
    n = 2600
    produce(kafka, topic, records[:n])
    uri = f'kafka://{kafka.brokers}/{topic}?group=logs-job&stop=idle:2s'
    common = ['--source', uri, '--trigger', 'default', '--no-summary'] + (
        ['--streaming'] if streaming else [])

    first = run.run(logs, common + ['--sink', f'parquet://{tmp_path}/run1'])
    produce(kafka, topic, records[n:])
    second = run.run(logs, common + ['--sink', f'parquet://{tmp_path}/run2'])

    replay = tmp_path / 'all.log'
    replay.write_bytes(b'\n'.join(p for _, p in records) + b'\n')
    oracle = run.run(logs, ['--source', f'file://{replay}', '--sink',
                            f'parquet://{tmp_path}/replay', '--no-summary'])

    assert first['read'] == n and second['read'] == len(records) - n
    assert first['balanced'] and second['balanced']
    assert committed(kafka, topic, 'logs-job') == len(records)
    assert first['dead_lettered'] + second['dead_lettered'] == \
        oracle['dead_lettered'] == _dead(tmp_path / 'replay')
    assert _dead(tmp_path / 'run1') + _dead(tmp_path / 'run2') == \
        oracle['dead_lettered']
    counted = _stats(tmp_path / 'run1').add(_stats(tmp_path / 'run2'),
                                            fill_value=0)
    expected = _stats(tmp_path / 'replay')
    assert counted.sum() == expected.sum() == oracle['decoded']
    assert counted.astype(int).to_dict() == expected.astype(int).to_dict()
    # Printed for the record (pytest -s): the restart test's counts.
    print(f'\nrestart test: run 1 read {first["read"]}, run 2 read '
          f'{second["read"]}, replay read {oracle["read"]}; counted '
          f'{int(counted.sum())} decoded + '
          f'{first["dead_lettered"] + second["dead_lettered"]} dead letters')


def test_an_unbounded_read_fires_windows_while_the_job_runs(kafka, tmp_path):
    """stop=never on the local runner: windows close as the partitions'
    watermark passes them (records, then the clock once the topic is idle),
    while the job keeps running; their counts equal a file replay's."""
    import glob
    import time
    uri = transforms_io.parse_uri(
        'synthetic://logs?events=3000&seed=3&rate=10&late=0')
    records = list(synthetic.generate(uri).records())   # 5 minutes
    topic = fresh(kafka)
    produce(kafka, topic, records)
    result, _, _ = run.start(logs, [
        '--source', f'kafka://{kafka.brokers}/{topic}?group=live',
        '--trigger', 'default', '--sink', f'parquet://{tmp_path}/live'])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(glob.glob(
                f'{tmp_path}/live/service_stats/*/*.parquet')) < 5:
            time.sleep(1)
        assert str(result.state).endswith('RUNNING')
    finally:
        result.cancel()
    replay = tmp_path / 'all.log'
    replay.write_bytes(b'\n'.join(p for _, p in records) + b'\n')
    run.run(logs, ['--source', f'file://{replay}', '--trigger', 'default',
                   '--sink', f'parquet://{tmp_path}/replay', '--no-summary'])
    live = _stats(tmp_path / 'live')
    assert len(live.index.get_level_values('window_start').unique()) == 5
    assert live.astype(int).to_dict() == \
        _stats(tmp_path / 'replay').astype(int).to_dict()


def _final_counts(directory):
    """count of each (service, window)'s highest pane."""
    table = ds.dataset(f'{directory}/service_stats').to_table().to_pandas()
    final = table.sort_values('pane_index').groupby(
        ['service', 'window_start']).tail(1)
    return final.set_index(['service', 'window_start'])['count'].astype(
        int).to_dict()


def test_a_replayed_file_published_now_gives_every_window_its_final_pane(
        kafka, tmp_path):
    """A time-ordered log file dated in the past, published as it is (the
    records' Kafka timestamps are when they were published, not their event
    times) to 4 partitions, read as an endless stream: every window gets a
    final pane equal to a replay of the file.  The watermark follows the
    payloads' event times, and no record is taken for late because another
    partition was read first."""
    import glob
    import time
    from pipelines import publish
    services = ('checkout', 'search', 'auth', 'catalog', 'payments')
    n, step = 6000, 0.05                               # 5 minutes
    lines = [orjson.dumps({
        'timestamp': _rfc3339(T0 + i * step), 'service': services[i % 5],
        'level': 'ERROR' if i % 97 == 0 else 'INFO', 'status': 200,
        'latency_ms': float(i % 113)}) for i in range(n)]
    replay = tmp_path / 'all.log'
    replay.write_bytes(b'\n'.join(lines) + b'\n')
    publish.main(['--from', f'file://{replay}', '--to',
                  f'kafka://{kafka.brokers}/replayed', '--partitions', '4',
                  '--topic_config', 'retention.ms=-1'])
    result, _, _ = run.start(logs, [
        '--source', f'kafka://{kafka.brokers}/replayed?group=live&'
                    f'start=earliest&stop=never&watermark_lag=2s',
        '--sink', f'parquet://{tmp_path}/live'])
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and len(glob.glob(
                f'{tmp_path}/live/service_stats/*')) < 5:
            time.sleep(1)
        time.sleep(2)              # the last window's last files
        assert str(result.state).endswith('RUNNING')
    finally:
        result.cancel()
    run.run(logs, ['--source', f'file://{replay}', '--sink',
                   f'parquet://{tmp_path}/replay', '--no-summary'])
    expected = _final_counts(tmp_path / 'replay')
    assert len(expected) == 25 and sum(expected.values()) == n
    assert _final_counts(tmp_path / 'live') == expected


def _rfc3339(seconds):
    import datetime
    return datetime.datetime.fromtimestamp(
        seconds, datetime.timezone.utc).isoformat(
            timespec='milliseconds').replace('+00:00', 'Z')


def test_the_publisher_creates_the_topic_and_publishes_with_event_times(
        kafka, capsys):
    from pipelines import publish
    count = publish.main([
        '--from', 'synthetic://trades?events=500&seed=2',
        '--to', f'kafka://{kafka.brokers}/published', '--partitions', '3',
        '--topic_config', 'retention.ms=-1'])
    assert count == 500
    assert 'published 500 messages' in capsys.readouterr().out
    found = read_all(f'kafka://{kafka.brokers}/published?group=p&stop=end')
    records = _synthetic_records(500, seed=2, domain='trades')
    assert sorted(found) == sorted((p, round(t, 3)) for t, p in records)
    assert len(kafka.admin().list_topics(timeout=10)
               .topics['published'].partitions) == 3


def test_a_wrong_topic_or_broker_stops_the_job_with_one_line(kafka, capsys):
    import pytest as _pytest
    for source, reason in [
            (f'kafka://{kafka.brokers}/no-such-topic?stop=end',
             "no topic 'no-such-topic'"),
            (f'kafka://127.0.0.1:{kafka.port + 1}/logs?stop=end',
             'do not answer within 10 s')]:
        with _pytest.raises(SystemExit) as err:
            run.run(logs, ['--source', source])
        assert err.value.code == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith(
            'python -m pipelines logs: error: argument --source: ')
        assert reason in message and '\n' not in message


def test_an_idle_partition_stops_holding_windows_open(kafka, tmp_path):
    """Three partitions carry ten minutes of a stream; the fourth had one
    record at its start and nothing since.  Following the clock from that
    record it would hold every window but the first open for minutes; idle
    for 2 s (idle=2s) it stops holding the watermark back, and the windows
    emit their ON_TIME panes while the job runs, equal to a file replay."""
    import glob
    import time
    import confluent_kafka
    uri = transforms_io.parse_uri(
        'synthetic://logs?events=3000&seed=4&rate=5&late=0&malformed=0')
    records = list(synthetic.generate(uri).records())   # 10 minutes
    topic = fresh(kafka)
    producer = confluent_kafka.Producer({'bootstrap.servers': kafka.brokers})
    for i, (seconds, payload) in enumerate(records):
        producer.produce(topic, value=payload, partition=3 if i == 0 else
                         i % 3, timestamp=int(seconds * 1000))
    assert producer.flush(30) == 0
    windows_expected = 9      # the last window closes only when the job ends
    result, _, _ = run.start(logs, [
        '--source', f'kafka://{kafka.brokers}/{topic}?group=idle&idle=2s',
        '--trigger', 'default', '--sink', f'parquet://{tmp_path}/live'])
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(glob.glob(
                f'{tmp_path}/live/service_stats/*/')) < windows_expected:
            time.sleep(1)
        assert str(result.state).endswith('RUNNING')
    finally:
        result.cancel()
    replay = tmp_path / 'all.log'
    replay.write_bytes(b'\n'.join(p for _, p in records) + b'\n')
    run.run(logs, ['--source', f'file://{replay}', '--trigger', 'default',
                   '--sink', f'parquet://{tmp_path}/replay', '--no-summary'])
    live = _stats(tmp_path / 'live')
    starts = sorted(live.index.get_level_values('window_start').unique())
    assert len(starts) >= windows_expected
    expected = _stats(tmp_path / 'replay')
    for start in starts[:windows_expected]:
        assert live.xs(start, level='window_start').astype(int).to_dict() \
            == expected.xs(start, level='window_start').astype(int).to_dict()


def test_a_live_stream_labels_its_early_panes_early(kafka, tmp_path):
    """Records dated now, a watermark a minute behind the clock: EARLY
    firings of windows whose end the clock has passed (but not the
    watermark) are EARLY panes, followed by one ON_TIME pane; with no
    allowed lateness nothing is LATE."""
    import time
    now = time.time()
    records = [(now - 150 + i * 0.5, orjson.dumps({
        'ts': time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(
            now - 150 + i * 0.5)) + 'Z', 'service': 'web', 'level': 'INFO',
        'status': 200, 'latency_ms': 10.0, 'msg': 'ok'})) for i in range(300)]
    topic = fresh(kafka)
    produce(kafka, topic, records)
    result, _, _ = run.start(logs, [
        '--source', f'kafka://{kafka.brokers}/{topic}?group=live-panes'
        f'&watermark_lag=60s', '--window', 'fixed:20s',
        '--trigger', 'early=2s', '--sink', f'parquet://{tmp_path}/live'])
    try:
        time.sleep(25)
    finally:
        result.cancel()
    stats = ds.dataset(f'{tmp_path}/live/service_stats').to_table() \
        .to_pandas()
    assert (stats.pane_timing == 'EARLY').any()
    assert not (stats.pane_timing == 'LATE').any(), stats[
        ['window_start', 'pane_timing', 'pane_index']]
    # Each window: EARLY panes, then at most one ON_TIME pane, last.
    for _, window in stats.groupby('window_start'):
        timings = window.sort_values('pane_index').pane_timing.tolist()
        assert timings.count('ON_TIME') <= 1
        assert 'ON_TIME' not in timings[:-1], timings


def test_a_restart_skips_by_payload_event_time_and_splits_a_block_at_the_read_offset(
        kafka):
    """A group's last commit (offset 0, horizon T0+150, read up to offset
    200) over records dated by their payloads (one a second from T0) but
    published now: the restart's block read skips exactly the records read
    before offset 200 whose windows were final at the horizon (and an
    undatable one read then, a dead letter already), and emits the rest,
    the poll straddling offset 200 split record by record."""
    import time
    import confluent_kafka
    from apache_beam.metrics.metric import MetricsFilter
    from transforms import windows
    from transforms.columnar import LineBlock
    from transforms.decode import PayloadEventTime
    from transforms.io import _kafka_commits
    from transforms.logs import decoders
    topic = fresh(kafka, partitions=1)
    payloads = [orjson.dumps({
        'timestamp': _rfc3339(T0 + i), 'service': 'checkout',
        'level': 'INFO', 'status': 200, 'latency_ms': 1.0})
        for i in range(300)]
    payloads[10] = payloads[250] = b'not a log line'
    now = time.time()
    produce(kafka, topic, [(now, p) for p in payloads])
    group, horizon, read = 'straddle', T0 + 150, 200
    consumer = confluent_kafka.Consumer({'bootstrap.servers': kafka.brokers,
                                         'group.id': group})
    try:
        consumer.commit(offsets=[confluent_kafka.TopicPartition(
            topic, 0, 0, metadata=_kafka_commits.metadata(
                horizon, now, read))], asynchronous=False)
    finally:
        consumer.close()
    _kafka_commits.forget()
    context = transforms_io.Context(
        job='test', streaming=False,
        final_at=windows.FinalAt((windows.parse_window('fixed:60s'),), 30.0),
        event_time=PayloadEventTime(decoders.make_decoder('json')))
    source = transforms_io.open_source(
        f'kafka://{kafka.brokers}/{topic}?group={group}&stop=end', context)
    run_id = next(_names)
    _FOUND[run_id] = []
    pipeline = beam.Pipeline(options=PipelineOptions(
        ['--runner=BundleBasedDirectRunner']))
    _ = (pipeline | source.blocks()
         | beam.FlatMap(lambda v: v.lines() if isinstance(v, LineBlock)
                        else [v]).with_output_types(bytes)
         | beam.Map(_keep, run_id))
    result = pipeline.run()
    result.wait_until_finish()
    _kafka_commits.forget()
    found = _FOUND.pop(run_id)
    # Windows [T0, T0+60) and [T0+60, T0+120) were final at T0+150
    # (end + 30 s lateness): records 0-119, the undatable one among them.
    assert sorted(v for v, _ in found) == sorted(payloads[120:])
    assert min(t for _, t in found) >= horizon      # read under the horizon
    replayed = result.metrics().query(MetricsFilter().with_name(
        'filtered.replayed_final'))['counters']
    assert sum(c.committed for c in replayed) == 120


# ---------------------------------------------------------- a live stream's latency

# What a loaded CI machine may add to a pane's latency beyond the goal.
LATENCY_TOLERANCE = 3.0


def _pane_files(directory):
    """(window start, window end, pane timing, written at) of each file of
    the service_stats table."""
    import datetime
    import pathlib
    found = []
    for path in pathlib.Path(directory, 'service_stats').glob('*/*.parquet'):
        start, end = (datetime.datetime.strptime(
            stamp, '%Y%m%dT%H%M%SZ').replace(
                tzinfo=datetime.timezone.utc).timestamp()
            for stamp in path.parent.name.split('_'))
        timing = path.name.split('-')[2]
        found.append((start, end, timing, path.stat().st_mtime))
    return found


def test_a_paced_live_stream_gets_early_panes_and_prompt_on_time_panes(
        kafka, tmp_path):
    """Records dated now, 50 a second over 4 partitions, 6 s windows with
    early firings every 2 s and a 1 s watermark lag: while a window is
    open its EARLY panes are written, and its ON_TIME pane is written
    within the watermark lag + 2 s (+ LATENCY_TOLERANCE) of the arrival of
    the record that closes it (the first of the next window)."""
    import time
    import confluent_kafka
    topic = fresh(kafka)
    lag, window, seconds, rate = 1.0, 6.0, 15.0, 50
    result, _, _ = run.start(logs, [
        '--source', f'kafka://{kafka.brokers}/{topic}?group=paced'
                    f'&watermark_lag=1s', '--window', 'fixed:6s',
        '--trigger', 'early=2s', '--sink', f'parquet://{tmp_path}/live'])
    arrived = []                  # (event time, acknowledged by the broker)
    producer = confluent_kafka.Producer({'bootstrap.servers': kafka.brokers,
                                         'linger.ms': 5})
    try:
        time.sleep(3)             # the job's reads have started
        began = time.time()
        for i in range(int(seconds * rate)):
            pause = began + i / rate - time.time()
            if pause > 0:
                time.sleep(pause)
            now = time.time()
            producer.produce(
                topic, partition=i % 4, timestamp=int(now * 1000),
                value=orjson.dumps({
                    'timestamp': _rfc3339(now), 'service': f'svc{i % 5}',
                    'level': 'INFO', 'status': 200, 'latency_ms': 5.0}),
                on_delivery=lambda err, _m, t=now: arrived.append(
                    (t, time.time())) if err is None else None)
            producer.poll(0)
        assert producer.flush(10) == 0
        ended = time.time()
        time.sleep(lag + 2 + LATENCY_TOLERANCE)
        assert str(result.state).endswith('RUNNING')
    finally:
        result.cancel()
    panes = _pane_files(tmp_path / 'live')
    # Windows the stream covers whole, closed by its records (not by the
    # clock once it has stopped).
    first = (began // window + 1) * window
    closed = [start for start in np.arange(first, ended, window)
              if start + window + lag + 0.5 < ended]
    assert closed, 'the stream covers no whole window'
    for start in closed:
        end = start + window
        early = [t for s, _, timing, t in panes
                 if s == start and timing == 'EARLY']
        on_time = [t for s, _, timing, t in panes
                   if s == start and timing == 'ON_TIME']
        assert any(t < end for t in early), \
            f'no EARLY pane of [{start}, {end}) while it was open'
        closing = min(acked for event, acked in arrived if event >= end)
        assert on_time, f'no ON_TIME pane of [{start}, {end})'
        late_by = min(on_time) - closing
        assert late_by <= lag + 2 + LATENCY_TOLERANCE, \
            f'ON_TIME pane of [{start}, {end}) written {late_by:.1f} s ' \
            f'after the record that closes it arrived'
        # Printed for the record (pytest -s).
        print(f'\n[{start}, {end}): {len(early)} EARLY panes while open, '
              f'ON_TIME {late_by:.2f} s after the closing record')


def test_a_restart_skips_records_whose_dead_letters_were_written(
        kafka, tmp_path):
    """A killed run had written the dead letters of records it could not
    date, read after its last commit's look (each dead letter naming its
    partition and offset after the source URI): the restart finds them in
    the sink and skips those records (counted
    filtered.replayed_dead_letter), dead-letters the others, and every
    undatable payload is in the dead letters once.  The dead letters the
    run writes name their records, that of a record of several lines too
    (the decode step refuses it whole: one dead letter, as a single
    line)."""
    import collections
    import time
    import confluent_kafka
    from transforms import deadletter
    from transforms.io import _kafka_commits, parquet
    records = list(synthetic.generate(transforms_io.parse_uri(
        'synthetic://logs?events=600&seed=3')).records())
    # The last: three log lines in one record, refused whole.
    several = b'\n'.join(p for _, p in records[:3])
    bad = [b'not a log line', b'not a log line', b'{"no": "time"}', b'',
           several]
    stream = records[:300] + [(T0 + 300, p) for p in bad] + records[300:]
    topic = fresh(kafka, partitions=1)
    produce(kafka, topic, stream)
    group = 'dead-lettered'
    consumer = confluent_kafka.Consumer({'bootstrap.servers': kafka.brokers,
                                         'group.id': group})
    try:
        # The last commit: offset 0, nothing final, nothing processed;
        # taken a minute from now (the dead letters below predate it).
        consumer.commit(offsets=[confluent_kafka.TopicPartition(
            topic, 0, 0, metadata=_kafka_commits.metadata(
                T0 - 3600, time.time() + 60, 0))], asynchronous=False)
    finally:
        consumer.close()
    source = f'kafka://{kafka.brokers}/{topic}?group={group}&stop=idle:2s'
    folder = tmp_path / 'out' / 'dead_letter' / 'unwindowed'
    folder.mkdir(parents=True)
    written = [deadletter.dead_letter(
        stream[offset][1], 'decode.logs', 'refused',
        f'{source}#partition=0&offset={offset}') for offset in (300, 302)]
    (folder / 'dead_letter-killed.parquet').write_bytes(
        parquet.encode_parquet(written, deadletter.DeadLetter))
    summary = run.run(logs, [
        '--source', source, '--streaming', '--sink',
        f'parquet://{tmp_path}/out', '--trigger',
        'late=1,lateness=1h,accumulating', '--no-summary'])
    assert summary['filters'] == {'replayed_dead_letter': 2}
    assert summary['read'] == len(stream) and summary['balanced']
    # Every dead letter names its record, the one of several lines too: a
    # kill now would not write them again.
    sources = ds.dataset(f'{tmp_path}/out/dead_letter').to_table(
        columns=['source']).column('source').to_pylist()
    assert all(s.startswith(f'{source}#partition=0&offset=') for s in sources)
    assert f'{source}#partition=0&offset=304' in sources
    replay = tmp_path / 'all.log'
    replay.write_bytes(b'\n'.join(p for _, p in stream) + b'\n')
    run.run(logs, ['--source', f'file://{replay}', '--sink',
                   f'parquet://{tmp_path}/replay', '--no-summary'])

    def dead(directory):
        table = ds.dataset(f'{directory}/dead_letter').to_table().to_pandas()
        return collections.Counter(table.raw)
    # A file replay reads the three lines one by one (records); the
    # stream's record of several lines is one dead letter.
    # (masked: the dead letters hold no personal data).
    extra = dead(tmp_path / 'out') - dead(tmp_path / 'replay')
    assert not dead(tmp_path / 'replay') - dead(tmp_path / 'out')
    assert list(extra.values()) == [1] and \
        [raw.count(b'\n') for raw in extra] == [2]
    assert dead(tmp_path / 'out')[b'not a log line'] == 2


def test_a_restart_skips_late_records_whose_dead_letters_were_written(
        kafka, tmp_path):
    """The same for records too late for their windows: a killed run had
    written the window.late dead letters of two records (naming their
    partition and offset), read after its last commit's look; the restart,
    whose watermark starts past every window of the stream, skips those
    two and keeps every other record as a late dead letter naming it (or,
    undatable, a decode dead letter naming it): each record is in the
    dead letters exactly once.  (Before, a Kafka record's window.late dead
    letter named nothing, and a restart wrote it again.)"""
    import collections
    from transforms import aggregate, deadletter
    from transforms.io import parquet
    records = list(synthetic.generate(transforms_io.parse_uri(
        'synthetic://logs?events=200&seed=3')).records())
    source = killed_past_every_window(kafka, records, 'late-dead-lettered')
    sink = tmp_path / 'out'
    folder = sink / 'dead_letter' / 'unwindowed'
    folder.mkdir(parents=True)
    written = [deadletter.dead_letter(
        records[offset][1], aggregate.LATE_STAGE, 'late',
        f'{source}#partition=0&offset={offset}') for offset in (5, 50)]
    (folder / 'dead_letter-killed.parquet').write_bytes(
        parquet.encode_parquet(written, deadletter.DeadLetter))
    summary = run.run(logs, [
        '--source', source, '--streaming', '--sink', f'parquet://{sink}',
        '--trigger', 'late=1,lateness=1h,accumulating', '--no-summary'])
    assert summary['filters'] == {'replayed_dead_letter': 2}
    assert summary['read'] == len(records) and summary['balanced']
    table = ds.dataset(f'{sink}/dead_letter').to_table(
        columns=['stage', 'source']).to_pylist()
    stages = collections.Counter(row['stage'] for row in table)
    assert stages[aggregate.LATE_STAGE] > len(records) * 0.9
    # The oracle: each record exactly once among the dead letters.
    assert collections.Counter(row['source'] for row in table) == \
        collections.Counter(f'{source}#partition=0&offset={o}'
                            for o in range(len(records)))


def test_every_late_dead_letter_of_a_disordered_stream_names_its_record(
        kafka, tmp_path):
    """A live stream on 4 partitions, every 40th record arriving 200
    records (100 s) late, the allowed lateness 30 s: the records kept late
    are dead letters naming their partition and offset (so that a restart
    does not write them again), every record is in its window or a dead
    letter once, and commits move on while the stream runs.  (Before, no
    late dead letter of a Kafka record named it; then, under load, most
    of them did not: the read judged "may be late" by its estimator,
    which starts empty, and forgot the registration once the raw value
    was decoded, before its late decision.)"""
    import collections
    import threading
    import time
    records = list(synthetic.generate(transforms_io.parse_uri(
        'synthetic://logs?events=4000&seed=11&rate=2')).records())
    stream = list(records)
    for i in range(40, len(records) - 300, 40):
        stream.remove(records[i])
        stream.insert(i + 200, records[i])
    topic = fresh(kafka)
    group = 'disordered'
    source = f'kafka://{kafka.brokers}/{topic}?group={group}&stop=idle:3s'
    seen = []

    def produce_over_time():
        for start in range(0, len(stream), 1000):
            produce(kafka, topic, stream[start:start + 1000])
            for _ in range(6):
                time.sleep(0.25)
                seen.append(committed(kafka, topic, group))
    producer = threading.Thread(target=produce_over_time)
    producer.start()
    try:
        summary = run.run(logs, [
            '--source', source, '--streaming', '--sink',
            f'parquet://{tmp_path}/out', '--trigger',
            'late=1,lateness=30s,accumulating', '--no-summary'])
    finally:
        producer.join()
    assert summary['read'] == len(stream) and summary['balanced']
    assert summary['late_kept'] > 0
    assert max(seen) > 0                 # committed while it ran
    table = ds.dataset(f'{tmp_path}/out/dead_letter').to_table(
        columns=['stage', 'source']).to_pylist()
    late = [row['source'] for row in table if row['stage'] == 'window.late']
    assert len(late) == summary['late_kept']
    assert all(s.startswith(f'{source}#partition=') for s in late), late
    # each record at most once among the dead letters
    assert max(collections.Counter(row['source'] for row in table)
               .values()) == 1


@pytest.mark.parametrize('rollup_window', [None, 'sliding:2m/1m'],
                         ids=['fixed', 'sliding'])
def test_a_restart_writes_each_late_letter_of_a_video_report_once(
        kafka, tmp_path, rollup_window):
    """video_qoe on Kafka, as on Pub/Sub: a report too late for its
    session and for its rollups makes one late dead letter for the session
    and one per rollup dimension, each written on its own, each naming the
    record and its output (``#partition=P&offset=O&window=session|rollup
    &key=K``).  A killed run left a report's letters for both, one report's
    for its session only and one report's for two of its four rollup
    dimensions only, after its last commit's look; the restart, whose
    watermark starts past every window, reads those three again and keeps
    each out of exactly the outputs whose letters the sink holds: every
    report's letters are there exactly once.  (Before, the read registered
    no video record, session windows never being final: no letter named
    its record, and the restart wrote those 8 letters again.)  With
    sliding rollup windows (2m/1m) a report's contribution is in two
    windows per dimension and its rollup letters name their window
    (``window=rollup@END``): the killed run left one report's letters for
    two dimensions of one of its windows, and the restart writes the
    other window's.  (Before, both windows' letters had one name, so a
    letter left for one window kept the report out of both: that other
    letter lost; here the restart kept 538 late, not 528, the letters
    named as the sink's were written again.)"""
    from pipelines import video_qoe
    from transforms import aggregate
    from tests.integration.video_letters import Letters
    records = [(t, payload) for t, payload in synthetic.generate(
        transforms_io.parse_uri('synthetic://video?sessions=8&seed=3'))
        .records() if payload]
    payloads = [payload for _, payload in records]
    source = killed_past_every_window(
        kafka, records, f'video-late-{bool(rollup_window)}')
    letters = Letters(payloads,
                      lambda i: f'{source}#partition=0&offset={i}',
                      None if rollup_window is None else (120, 60))
    killed = letters.killed()
    sink = tmp_path / 'out'
    letters.leave_in(sink, killed)
    summary = run.run(video_qoe, [
        '--source', source, '--streaming', '--sink', f'parquet://{sink}',
        '--no-summary'] + (['--rollup_window', rollup_window]
                           if rollup_window else []))
    assert summary['read'] == len(payloads) and summary['balanced']
    # No record skipped: each is read again and kept out of the outputs
    # whose letters the sink held.
    assert not summary['filters'].get('replayed_dead_letter')
    table = letters.check(sink, summary, killed)
    # The letters that name no record are durations and exits of the
    # sessions' walks (they hold no report); the undecodable records'
    # letters name their record.
    for row in table:
        if '&window=' in row['source']:
            continue
        if row['stage'] == aggregate.LATE_STAGE:
            assert row['source'] == source and \
                row['reason'].startswith('0 record(s)')
        else:
            assert row['source'].startswith(f'{source}#partition=0&offset=')


@pytest.mark.parametrize('job', ['logs', 'trades', 'sensors'])
def test_a_restart_writes_each_sliding_window_late_letter_once(
        kafka, tmp_path, job):
    """Sliding windows (2m/1m: each record in two windows): a killed run
    had written one record's window.late dead letter for the first of its
    windows only (a kill before the second); the restart, whose watermark
    starts past every window, reads that record again, keeps it out of that
    window alone and writes the second window's letter.  Each letter names
    its record, window and key, and every (record, window) assignment is
    among the dead letters exactly once; for every job that keeps late
    records.  (Before, a late letter named its record only, and a restart
    skipped the record whole: its other window's assignment was lost; the
    trades and sensors jobs named no record at all: 198 and 200 letters
    named nothing, and were written again.)"""
    from tests.integration.sliding_letters import SlidingLetters
    letters = SlidingLetters(job)
    source = killed_past_every_window(kafka, letters.records,
                                      f'sliding-late-{job}')
    sink = tmp_path / 'out'
    letters.leave_killed(
        sink, f'{source}#partition=0&offset={letters.killed}')
    summary = letters.run(source, sink)
    letters.check(sink, source, summary,
                  lambda origin: int(origin.rpartition('=')[2]))


# The trades job of the price-anomaly restart test: bars of a minute, price
# anomaly windows of 5 minutes (judged with no allowed lateness), an hour of
# lateness for the bars.
TRADES_RESTART = ['--window', 'fixed:60s', '--anomaly_window', 'fixed:5m',
                  '--anomaly_min_trades', '5', '--trigger',
                  'late=1,lateness=1h,accumulating', '--streaming',
                  '--no-summary']
TRADES_STREAM = ('synthetic://trades?events=4000&seed=11&rate=0.5'
                 '&fat_finger=0.02')


def _anomalies(directory, kind):
    """The ``kind`` rows of the anomalies table: identity, price and
    deviation, a Counter (a row written twice counts 2)."""
    import collections
    table = ds.dataset(f'{directory}/anomalies').to_table().to_pylist()
    return collections.Counter(
        (r['symbol'], r['event_time'], r['trade_id'], r['window_start'],
         r['window_end'], r['price'], round(r['deviation'], 9))
        for r in table if r['kind'] == kind)


def test_a_restart_keeps_the_price_anomalies_of_windows_judged_before_its_horizon(
        kafka, tmp_path):
    """Price anomalies are judged by a grouping with no allowed lateness:
    an anomaly window that ends by a commit's horizon was judged before the
    kill, and the trades a restart reads again are too late for it (dropped
    there).  So the restart must keep its rows although its end plus the
    job's lateness (that of the bars) is after the horizon.  A killed run's
    sink (all an uninterrupted run wrote, dated before its last commit) and
    a commit at offset 0 whose horizon is 1.5 h into the 1.8 h stream, the
    whole backlog read before its look (a backlog is read at once): the
    resumed run's price anomalies equal the uninterrupted run's, none lost,
    none twice, and so do its bars and dead letters (the trades of windows
    final at the horizon skipped, each window judged by its own grouping's
    lateness, the others read again).  (Before, the 10 windows ending
    within the hour before the horizon were rolled back and never judged
    again: 43 of 68 prices lost; and the 58 trades of the final bars of an
    anomaly window not final by the job's lateness were read again, late
    dead letters beside their bars.)"""
    import collections
    import shutil
    from pipelines import trades
    records = list(synthetic.generate(
        transforms_io.parse_uri(TRADES_STREAM)).records())
    topic = fresh(kafka, partitions=1)
    produce(kafka, topic, records)
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    run.run(trades, TRADES_RESTART + [
        '--source', f'kafka://{kafka.brokers}/{topic}?group=whole'
                    f'&stop=idle:2s', '--sink', f'parquet://{whole}'])
    expected = _anomalies(whole, 'price')
    shutil.copytree(whole, resumed)       # file times kept: before the commit
    first = min(t for t, _ in records)
    # 1.5 h into a stream of 1.8 h; an hour before it, 2.5 min into an
    # anomaly window: the trades of its first bars are final (their bars
    # and their anomaly window, judged with no lateness) and skipped.
    horizon = first + 5400 + 150
    source = killed_at(kafka, topic, 'resumed', horizon, read=len(records))
    summary = run.run(trades, TRADES_RESTART + [
        '--source', source, '--sink', f'parquet://{resumed}'])
    assert summary['read'] == len(records) and summary['balanced']
    assert 0 < summary['filters']['replayed_final'] < len(records)
    for table, columns in (('bars', ['symbol', 'window_start', 'pane_index',
                                     'trade_count', 'open', 'close', 'high',
                                     'low']),
                           ('dead_letter', ['raw', 'stage'])):
        assert collections.Counter(map(tuple, map(dict.values, ds.dataset(
            f'{resumed}/{table}').to_table(columns=columns).to_pylist()))) \
            == collections.Counter(map(tuple, map(dict.values, ds.dataset(
                f'{whole}/{table}').to_table(columns=columns).to_pylist())))
    ends = {key[4].timestamp() for key in expected}
    # The case at stake: windows judged before the horizon whose end plus
    # the bars' lateness is after it (kept), and windows after it (judged
    # again by the restart).
    assert any(horizon - 3600 < end <= horizon for end in ends)
    assert any(end > horizon for end in ends)
    assert _anomalies(resumed, 'price') == expected


@pytest.mark.parametrize('execution', ['columnar', 'element'])
def test_a_restart_keeps_trades_read_again_out_of_their_final_bars(
        kafka, tmp_path, execution):
    """trades on Kafka, fixed bars (60 s, lateness 60 s) and anomaly
    windows (5 m): a killed run's last commit left offset 0 with every
    record handed on before its look and a horizon (T0+250) at which the
    first three bars are final (closing T0+120, +180, +240) and no anomaly
    window is.  The restart reads every trade again, its watermark starting
    at the horizon: the trades of those three bars are kept out of them
    (their final panes were written by the killed run; counted
    ``final_replayed``), not late dead letters, and still judged in their
    anomaly window (a fat-finger trade among them is flagged); the later
    bars hold every trade.  The columnar path (partials that take each
    line's origin) and the element path alike.  (With the keep-out off in
    the partials, the 60 trades of the final bars were late dead letters:
    each counted twice, in its kept bar and in the dead letters.)"""
    from pipelines import trades
    records = []
    for i in range(200):
        t = T0 + 3 * i
        stamp = Timestamp.of(t).to_rfc3339()
        records.append((t, orjson.dumps({
            'event_time': stamp, 'symbol': ('AAPL', 'MSFT')[i % 2],
            'price': 1000.0 if i == 10 else 100.0 + i % 5, 'size': 10,
            'trade_id': f't{i}'})))
    topic = fresh(kafka, partitions=1)
    produce(kafka, topic, records)
    horizon = T0 + 250
    source = killed_at(kafka, topic, f'keep-out-{execution}', horizon,
                       read=len(records))
    sink = tmp_path / 'out'
    summary = run.run(trades, [
        '--source', source, '--streaming', '--sink', f'parquet://{sink}',
        '--trigger', 'late=1,lateness=60s,accumulating', '--execution',
        execution, '--anomaly_min_trades', '5', '--anomaly_k', '5',
        '--no-summary'])
    # the oracle: a bar [s, s+60) is final at the horizon if s+120 <= it
    starts = [int(t // 60 * 60) for t, _ in records]
    final = [s + 120 <= horizon for s in starts]
    assert sum(final) == 60
    assert summary['read'] == len(records) and summary['balanced']
    assert summary['kept_out_on_restart'] == sum(final)
    assert summary['late_kept'] == 0 and not summary['dropped_late']
    bars = ds.dataset(f'{sink}/bars').to_table().to_pandas()
    got = bars.sort_values('pane_index').groupby(
        ['symbol', 'window_start']).trade_count.last()
    got = {(s, int(w.timestamp())): int(c) for (s, w), c in got.items()}
    expected = {}
    for i, (s, is_final) in enumerate(zip(starts, final)):
        if not is_final:
            key = (('AAPL', 'MSFT')[i % 2], s)
            expected[key] = expected.get(key, 0) + 1
    assert got == expected
    anomalies = ds.dataset(f'{sink}/anomalies').to_table().to_pandas()
    assert list(anomalies[anomalies.kind == 'price'].trade_id) == ['t10']
