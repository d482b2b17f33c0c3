"""The Pub/Sub source and sink against Google's Pub/Sub emulator, started by
the tests on a loopback port."""
import itertools
import os
import time

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from apache_beam.utils.timestamp import Timestamp

from pipelines import run as job_run
from transforms import io as transforms_io
from transforms.detectors import Alert

_names = itertools.count()
T0 = 1767225600.0
_FOUND = {}


def _keep(value, run_id):
    _FOUND[run_id].append(value)


def _read_until(uri, expected, seconds=60, publish=None):
    """Run a streaming pipeline reading ``uri`` until it has read
    ``expected`` payloads (or the time is up), then cancel it."""
    run_id = next(_names)
    _FOUND[run_id] = []
    options = PipelineOptions(['--runner=BundleBasedDirectRunner',
                               '--streaming'])
    pipeline = beam.Pipeline(options=options)
    context = transforms_io.Context(job='test', streaming=True)
    _ = (pipeline | transforms_io.open_source(uri, context)
         | beam.Map(_keep, run_id))
    result = pipeline.run()
    try:
        if publish:
            publish()
        deadline = time.monotonic() + seconds
        while len(_FOUND[run_id]) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)        # anything beyond what was expected shows now
        assert result.state not in (PipelineState.FAILED,)
    finally:
        result.cancel()
    return _FOUND.pop(run_id)


def _publish(topic, payloads, **attributes_of):
    from google.cloud import pubsub_v1
    publisher = pubsub_v1.PublisherClient()
    futures = [publisher.publish(topic, payload,
                                 **{k: f(i) for k, f in attributes_of.items()})
               for i, payload in enumerate(payloads)]
    return [future.result(30) for future in futures]


def _killed_state(sink, sub, horizon, ids=(), lease=0.0):
    """The state file a killed run left beside ``sink``: its horizon, the
    messages it had acknowledged (``ids``), its leases ``lease`` seconds
    from now."""
    from transforms.io import _pubsub_acks
    with open(_pubsub_acks.state_path(str(sink), sub), 'w',
              encoding='utf-8') as f:
        f.write(orjson.dumps({'h': horizon, 't': time.time() + lease,
                              'ids': list(ids), 'ended': False}).decode())


def _published(pubsub, prefix, payloads, **attributes_of):
    """A new topic holding ``payloads`` and a subscription to it (10 s ack
    deadline): ``(subscription, message ids)``."""
    topic = pubsub.topic(f'{prefix}-{next(_names)}')
    sub = pubsub.subscription(topic, f'{prefix}-sub-{next(_names)}',
                              ack_deadline_seconds=10)
    return sub, _publish(topic, payloads, **attributes_of)


def _fresh_ledger(pubsub, tmp_path, prefix, payloads):
    """A new topic holding ``payloads``, a subscription to it (10 s ack
    deadline) and its state file under ``tmp_path``, every ledger
    forgotten and the subscription recovered afresh: ``(topic,
    subscription, state)``."""
    from transforms.io import _kafka_commits, _pubsub_acks
    topic = pubsub.topic(f'{prefix}-{next(_names)}')
    sub = pubsub.subscription(topic, f'{prefix}-sub-{next(_names)}',
                              ack_deadline_seconds=10)
    _publish(topic, payloads)
    state = _pubsub_acks.state_path(str(tmp_path), sub)
    _kafka_commits.forget()
    assert _pubsub_acks.recover(sub, state, 10) is None
    return topic, sub, state


def _pulled(ledger, sub, count):
    """Pulls ``count`` messages of ``sub`` with the ledger's client:
    ``(payload -> received message, payload -> message id)``."""
    received = []
    while len(received) < count:
        received += ledger.client.pull(subscription=sub, max_messages=count,
                                       timeout=10).received_messages
    by_data = {m.message.data: m for m in received}
    return by_data, {data: m.message.message_id
                     for data, m in by_data.items()}


def test_a_subscription_is_read_message_by_message(pubsub):
    topic = pubsub.topic(f'logs-{next(_names)}')
    sub = pubsub.subscription(topic, f'logs-sub-{next(_names)}')
    payloads = [f'{{"n": {i}}}'.encode() for i in range(150)]
    found = _read_until(f'pubsub://{sub}', len(payloads),
                        publish=lambda: _publish(topic, payloads))
    assert sorted(found) == sorted(payloads)


def test_messages_published_twice_with_one_id_are_read_once(pubsub):
    topic = pubsub.topic(f'dup-{next(_names)}')
    sub = pubsub.subscription(topic, f'dup-sub-{next(_names)}')
    payloads = [f'm{i}'.encode() for i in range(40)]
    twice = payloads + payloads[:15]
    ids = [f'id-{i}' for i in range(40)] + [f'id-{i}' for i in range(15)]
    found = _read_until(
        f'pubsub://{sub}?id_attribute=event_id', len(payloads),
        publish=lambda: _publish(topic, twice, event_id=ids.__getitem__))
    assert sorted(found) == sorted(payloads)


def test_the_sink_publishes_one_json_message_per_row(pubsub):
    name = f'alerts-{next(_names)}'
    topic = pubsub.topic(name)
    sub = pubsub.subscription(topic, f'{name}-sub')
    alerts = [Alert(key=f'svc{i}', metric='latency_p99_ms', state='RAISED',
                    value=1500.0 + i, threshold=1000.0,
                    window_start=Timestamp(T0 + 60 * i),
                    window_end=Timestamp(T0 + 60 * (i + 1)),
                    pane_timing='ON_TIME', pane_index=0) for i in range(5)]
    context = transforms_io.Context(job='test', run_id='20260101T000000Z')
    sink = transforms_io.open_sink(f'pubsub://{topic}', context)
    with beam.Pipeline(options=PipelineOptions(
            ['--runner=BundleBasedDirectRunner'])) as pipeline:
        _ = (pipeline | beam.Create(alerts).with_output_types(Alert)
             | sink.write('alerts', Alert))
    from google.cloud import pubsub_v1
    with pubsub_v1.SubscriberClient() as subscriber:
        received = []
        deadline = time.monotonic() + 30
        while len(received) < 5 and time.monotonic() < deadline:
            response = subscriber.pull(subscription=sub, max_messages=10,
                                       timeout=10)
            received += [m.message for m in response.received_messages]
    assert len(received) == 5
    by_key = {m.attributes['key']: m for m in received}
    assert sorted(by_key) == [f'svc{i}' for i in range(5)]
    for i in range(5):
        message = by_key[f'svc{i}']
        row = orjson.loads(message.data)
        assert row['value'] == 1500.0 + i
        assert message.attributes['table'] == 'alerts'
        assert message.attributes['run'] == '20260101T000000Z'
        assert message.attributes['event_time'] == \
            f'2026-01-01T00:{i + 1:02d}:00Z'


def test_the_logs_job_reads_a_subscription_and_publishes_alerts(pubsub):
    """The job over Pub/Sub, as `make demo-pubsub` runs it: every message
    read is decoded or dead-lettered (counted while the stream runs)."""
    from pipelines import logs
    from pipelines.publish import main as publish_main
    name = f'joblogs-{next(_names)}'
    topic = f'projects/{pubsub.PROJECT}/topics/{name}'
    alerts = pubsub.topic(f'{name}-alerts')
    publish_main(['--from', 'synthetic://logs?events=800&rate=100', '--now',
                  '--to', f'pubsub://{topic}', '--subscription', f'{name}-in'])
    result, _, _ = job_run.start(logs, [
        '--source', f'pubsub://projects/{pubsub.PROJECT}/subscriptions/'
                    f'{name}-in?timestamp_attribute=event_time',
        '--sink', 'console://', '--alerts', f'pubsub://{alerts}'])
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            summary = job_run.summarize(job_run.counters(result, 'logs'))
            if summary['read'] >= 800 and summary['balanced']:
                break
            time.sleep(1)
    finally:
        result.cancel()
    assert summary['read'] == 800
    assert summary['decoded'] + summary['dead_lettered'] == 800
    assert summary['dead_lettered'] > 0      # the stream's malformed records


def _pull_ids(sub, seconds=15):
    """The ids of the messages delivered to ``sub`` within ``seconds``
    (acknowledged at once)."""
    from google.cloud import pubsub_v1
    found = set()
    with pubsub_v1.SubscriberClient() as subscriber:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            response = subscriber.pull(subscription=sub, max_messages=100,
                                       timeout=5)
            if not response.received_messages:
                if found:
                    break
                continue
            found |= {m.message.message_id
                      for m in response.received_messages}
            subscriber.acknowledge(subscription=sub, ack_ids=[
                m.ack_id for m in response.received_messages])
    return found


def test_a_message_is_acknowledged_once_final_and_written(pubsub, tmp_path):
    """The local read's ledger: release(h) acknowledges the messages final
    by h whose read's output the runner has committed, writing the state a
    restart needs first; the others come again (here: released at once)."""
    from google.cloud import pubsub_v1
    from transforms.io import _kafka_commits, _pubsub_acks
    topic = pubsub.topic(f'acks-{next(_names)}')
    sub = pubsub.subscription(topic, f'acks-sub-{next(_names)}',
                              ack_deadline_seconds=10)
    _publish(topic, [b'early', b'late', b'unwritten'])
    state = _pubsub_acks.state_path(str(tmp_path), sub)
    _kafka_commits.forget()
    assert _pubsub_acks.recover(sub, state, 10) is None   # a fresh start
    try:
        ledger = _pubsub_acks.track(sub, pubsub_v1.SubscriberClient)
        by_data, ids = _pulled(ledger, sub, 3)
        ledger.hold(ids[b'early'], by_data[b'early'].ack_id, 10.0, 5.0)
        ledger.hold(ids[b'late'], by_data[b'late'].ack_id, 20.0, 5.0)
        ledger.read_started()          # that read's output is committed
        ledger.hold(ids[b'unwritten'], by_data[b'unwritten'].ack_id, 10.0,
                    5.0)
        # Delivered again while held: read once, the new ack id kept.
        assert not ledger.hold(ids[b'late'], by_data[b'late'].ack_id, 20.0,
                               5.0)
        # Handed over after the runner took its horizon: not yet.
        _kafka_commits.release(15.0, 15.0)
        assert not os.path.exists(state) or '"ids":[]' in open(
            state, encoding='utf-8').read()
        _kafka_commits.prepare()
        # Something it produced is still pending: not yet.
        _kafka_commits.release(15.0, 4.0)
        assert '"ids":[]' in open(state, encoding='utf-8').read()
        _kafka_commits.release(15.0, 15.0)
        with open(state, encoding='utf-8') as f:
            written = orjson.loads(f.read())
        assert written['h'] == 15.0 and written['ids'] == [ids[b'early']]
        assert not written['ended']
        # What was not acknowledged comes again once released.
        ledger.client.modify_ack_deadline(
            subscription=sub, ack_deadline_seconds=0,
            ack_ids=[by_data[d].ack_id for d in (b'late', b'unwritten')])
    finally:
        _kafka_commits.forget()
    assert _pull_ids(sub) == {ids[b'late'], ids[b'unwritten']}
    # A restart reads the state: roll back to 15 s, skip the acknowledged.
    assert _pubsub_acks.recover(sub, state, 10)[0] == 15.0
    assert _pubsub_acks.resume(sub).ids == {ids[b'early']}
    _kafka_commits.forget()


def test_a_state_never_records_a_horizon_lower_than_one_recorded(
        pubsub, tmp_path, monkeypatch):
    """The runner's horizon dips while a late record is pending (it stops
    just before that record's timestamp).  A message final at the dip (an
    undatable one whose dead letter is written, say) is acknowledged then,
    but the state must keep the higher horizon recorded before: windows
    final then are written and their messages acknowledged, and a restart
    that rolled them back would never see those messages again (lost)."""
    from google.cloud import pubsub_v1
    from transforms.io import _kafka_commits, _pubsub_acks
    monkeypatch.setattr(_pubsub_acks, 'MIN_INTERVAL', 0.0)
    topic, sub, state = _fresh_ledger(pubsub, tmp_path, 'dip',
                                      [b'on time', b'undatable'])
    try:
        ledger = _pubsub_acks.track(sub, pubsub_v1.SubscriberClient)
        by_data, ids = _pulled(ledger, sub, 2)
        # A message whose window is final by 100 s.
        ledger.hold(ids[b'on time'], by_data[b'on time'].ack_id, 100.0, 50.0)
        ledger.read_started()
        _kafka_commits.prepare()
        _kafka_commits.release(150.0, 150.0)
        with open(state, encoding='utf-8') as f:
            assert orjson.loads(f.read())['h'] == 150.0
        # An undatable message, final once its dead letter is written,
        # acknowledged while a late record stamped at 20 s is pending.
        ledger.hold(ids[b'undatable'], by_data[b'undatable'].ack_id,
                    float('-inf'), 10.0)
        ledger.read_started()
        _kafka_commits.prepare()
        _kafka_commits.release(20.0, 20.0)
        with open(state, encoding='utf-8') as f:
            written = orjson.loads(f.read())
        assert written['ids'] == [ids[b'undatable']]
        assert written['h'] == 150.0, written
    finally:
        _kafka_commits.forget()
    # A restart keeps the window final at 150 s (its message acknowledged).
    assert _pubsub_acks.recover(sub, state, 10)[0] == 150.0
    _kafka_commits.forget()


def test_no_state_records_a_horizon_past_a_window_of_a_held_message(
        pubsub, tmp_path):
    """Where a restart cannot keep a message out of its final windows one
    by one (a first close given: video_qoe's sessions, whose rule this
    is; sliding windows take the keep-out rule now, see the next test),
    shown with sliding windows' closes
    (2m/1m, no lateness): a message at T0+10 is in
    [T0-60, T0+60) and [T0, T0+120).  Held (not acknowledged: its second
    window is open) when the runner's horizon is T0+100, it comes again
    after a kill; a state recording T0+100 would keep the first window's
    pane at the restart, which would find the message late for it: counted
    twice.  So the horizon used stops just before T0+60: a message whose
    windows are all final by then is acknowledged, one that needs T0+100
    is not yet; and once the first message is acknowledged the horizon
    goes on (never below one recorded).  A message at T0-30 would hold
    it lower still ([T0-60, T0+60) is its second window: not final just
    before T0+60, its first [T0-120, T0) would be).  For fixed windows
    (no first close given) nothing changes: the horizon is the
    runner's."""
    from google.cloud import pubsub_v1
    from transforms import windows
    from transforms.io import _kafka_commits, _pubsub_acks
    spec = windows.parse_window('sliding:2m/1m')
    trigger = windows.TriggerSpec(late=1, lateness=0.0)
    final_at = windows.FinalAt((spec,), 0.0)
    late_from = windows.LateFrom((spec,), trigger)
    assert late_from(T0 + 10) == T0 + 60 and final_at(T0 + 10) == T0 + 120
    topic, sub, state = _fresh_ledger(pubsub, tmp_path, 'first',
                                      [b'open', b'early', b'fixed'])
    try:
        ledger = _pubsub_acks.track(sub, pubsub_v1.SubscriberClient)
        by_data, ids = _pulled(ledger, sub, 3)
        # 'early' at T0-70: windows [T0-180, T0-60) and [T0-120, T0)
        ledger.hold(ids[b'early'], by_data[b'early'].ack_id,
                    final_at(T0 - 70), T0 - 70, first=late_from(T0 - 70))
        ledger.hold(ids[b'open'], by_data[b'open'].ack_id,
                    final_at(T0 + 10), T0 + 10, first=late_from(T0 + 10))
        ledger.read_started()
        _kafka_commits.prepare()
        _kafka_commits.release(T0 + 100, T0 + 100)
        with open(state, encoding='utf-8') as f:
            written = orjson.loads(f.read())
        # before: h T0+100 (the first window of 'open' final at it)
        assert written['h'] < late_from(T0 + 10)
        assert written['h'] == pytest.approx(T0 + 60, abs=0.01)
        assert written['ids'] == [ids[b'early']]
        # 'open' is final at T0+120: acknowledged, the horizon moves on
        time.sleep(_pubsub_acks.MIN_INTERVAL)
        _kafka_commits.release(T0 + 130, T0 + 130)
        with open(state, encoding='utf-8') as f:
            written = orjson.loads(f.read())
        assert written['h'] == T0 + 130 and written['ids'] == [ids[b'open']]
        # Fixed windows: no first close, the runner's horizon as before.
        ledger.hold(ids[b'fixed'], by_data[b'fixed'].ack_id, T0 + 200,
                    T0 + 130)
        ledger.read_started()
        _kafka_commits.prepare()
        time.sleep(_pubsub_acks.MIN_INTERVAL)
        _kafka_commits.release(T0 + 250, T0 + 250)
        with open(state, encoding='utf-8') as f:
            written = orjson.loads(f.read())
        assert written['h'] == T0 + 250 and \
            written['ids'] == [ids[b'fixed']]
    finally:
        _kafka_commits.forget()


def test_a_restart_skips_messages_whose_final_panes_were_written(
        pubsub, tmp_path):
    """A killed run had written the final panes of some messages and was
    acknowledging them: the restart reads them again, skips them (counted
    filtered.replayed_final) and computes the rest as a replay of the rest
    does."""
    from pipelines import logs
    from transforms.io import synthetic
    from tests.integration.test_kill_restart import _final_panes
    records = list(synthetic.generate(transforms_io.parse_uri(
        'synthetic://logs?events=1500&seed=3')).records())
    payloads = [payload for _, payload in records]
    sub, ids = _published(pubsub, 'skip', payloads, seq=str)
    skipped = 300
    sink = tmp_path / 'out'
    sink.mkdir()
    _killed_state(sink, sub, T0 - 3600, ids[:skipped])
    summary = job_run.run(logs, [
        '--source', f'pubsub://{sub}?stop=idle:2s', '--streaming',
        '--sink', f'parquet://{sink}', '--trigger',
        'late=1,lateness=1h,accumulating', '--no-summary'])
    assert summary['filters'] == {'replayed_final': skipped}
    assert summary['read'] == len(payloads) and summary['balanced']
    replay = tmp_path / 'rest.log'
    replay.write_bytes(b'\n'.join(payloads[skipped:]) + b'\n')
    job_run.run(logs, ['--source', f'file://{replay}', '--sink',
                       f'parquet://{tmp_path}/replay', '--no-summary'])
    expected = _final_panes(tmp_path / 'replay')
    assert expected and _final_panes(sink) == expected


def test_a_restart_skips_messages_whose_dead_letters_were_written(
        pubsub, tmp_path):
    """A killed run had written the dead letters of some messages it could
    not date (each naming its message id after the source URI) but not yet
    acknowledged them: the restart finds those dead letters in the sink,
    skips the messages when they come again (counted
    filtered.replayed_dead_letter) and dead-letters the others: every
    undatable payload is in the dead letters once.  The dead letters the
    run writes name their messages, that of a message of several lines
    too (refused whole: one dead letter, as a single line)."""
    import collections
    import pyarrow.dataset as ds
    from pipelines import logs
    from transforms import deadletter
    from transforms.io import parquet, synthetic
    records = list(synthetic.generate(transforms_io.parse_uri(
        'synthetic://logs?events=600&seed=3')).records())
    # The last: three log lines in one message, refused whole.
    several = b'\n'.join(p for _, p in records[:3])
    bad = [b'not a log line', b'not a log line', b'{"no": "time"}', b'',
           several]
    payloads = [payload for _, payload in records] + bad
    sub, ids = _published(pubsub, 'dead', payloads, seq=str)
    source = f'pubsub://{sub}?stop=idle:2s'
    sink = tmp_path / 'out'
    folder = sink / 'dead_letter' / 'unwindowed'
    folder.mkdir(parents=True)
    # Written by the killed run: one of the two equal lines, and the
    # undatable JSON object.
    written = [deadletter.dead_letter(
        payloads[i], 'decode.logs', 'refused', f'{source}#message={ids[i]}')
        for i in (len(records), len(records) + 2)]
    (folder / 'dead_letter-killed.parquet').write_bytes(
        parquet.encode_parquet(written, deadletter.DeadLetter))
    _killed_state(sink, sub, T0 - 3600, lease=60)
    summary = job_run.run(logs, [
        '--source', source, '--streaming', '--sink', f'parquet://{sink}',
        '--trigger', 'late=1,lateness=1h,accumulating', '--no-summary'])
    assert summary['filters'] == {'replayed_dead_letter': 2}
    # Every dead letter names its message, the one of several lines too: a
    # kill now would not write them again.
    sources = ds.dataset(f'{sink}/dead_letter').to_table(
        columns=['source']).column('source').to_pylist()
    assert all(s.startswith(f'{source}#message=') for s in sources)
    assert f'{source}#message={ids[-1]}' in sources
    assert summary['read'] == len(payloads) and summary['balanced']
    replay = tmp_path / 'all.log'
    replay.write_bytes(b'\n'.join(payloads) + b'\n')
    job_run.run(logs, ['--source', f'file://{replay}', '--sink',
                       f'parquet://{tmp_path}/replay', '--no-summary'])

    def dead(directory):
        table = ds.dataset(f'{directory}/dead_letter').to_table().to_pandas()
        return collections.Counter(table.raw)
    # A file replay reads the three lines one by one (records); the
    # message of several lines is one dead letter.
    # (masked: the dead letters hold no personal data).
    extra = dead(sink) - dead(tmp_path / 'replay')
    assert not dead(tmp_path / 'replay') - dead(sink)
    assert list(extra.values()) == [1] and \
        [raw.count(b'\n') for raw in extra] == [2]
    assert dead(sink)[b'not a log line'] == 2


def test_a_restart_skips_late_messages_whose_dead_letters_were_written(
        pubsub, tmp_path):
    """The same for records too late for their windows: a killed run had
    written the window.late dead letters of two messages (naming their ids)
    but not acknowledged them; the restart, whose watermark starts past
    every window of the stream, skips those two when they come again and
    keeps every other one as a late dead letter naming its message: each
    message is in the dead letters exactly once.  (Before, a window.late
    dead letter named nothing, and a restart wrote it again.)"""
    import collections
    import pyarrow.dataset as ds
    from pipelines import logs
    from transforms import aggregate, deadletter
    from transforms.io import parquet, synthetic
    records = list(synthetic.generate(transforms_io.parse_uri(
        'synthetic://logs?events=200&seed=3')).records())
    # (Pub/Sub refuses empty messages)
    records = [(t, payload) for t, payload in records if payload]
    payloads = [payload for _, payload in records]
    sub, ids = _published(pubsub, 'late', payloads)
    source = f'pubsub://{sub}?stop=idle:2s'
    sink = tmp_path / 'out'
    folder = sink / 'dead_letter' / 'unwindowed'
    folder.mkdir(parents=True)
    written = [deadletter.dead_letter(
        payloads[i], aggregate.LATE_STAGE, 'late',
        f'{source}#message={ids[i]}') for i in (5, 50)]
    (folder / 'dead_letter-killed.parquet').write_bytes(
        parquet.encode_parquet(written, deadletter.DeadLetter))
    # The killed run's horizon: every window of the stream final (a day
    # after its last record; the allowed lateness is an hour).
    horizon = max(float(t) for t, _ in records) + 86400
    _killed_state(sink, sub, horizon, lease=60)
    summary = job_run.run(logs, [
        '--source', source, '--streaming', '--sink', f'parquet://{sink}',
        '--trigger', 'late=1,lateness=1h,accumulating', '--no-summary'])
    assert summary['filters'] == {'replayed_dead_letter': 2}
    table = ds.dataset(f'{sink}/dead_letter').to_table(
        columns=['stage', 'source']).to_pylist()
    # (the stream's few undatable lines are decode dead letters)
    stages = collections.Counter(row['stage'] for row in table)
    assert stages[aggregate.LATE_STAGE] > len(payloads) * 0.9
    # The oracle: each message id exactly once among the dead letters.
    assert collections.Counter(row['source'] for row in table) == \
        collections.Counter(f'{source}#message={i}' for i in ids)


def test_a_topic_source_resumes_only_through_a_named_subscription(
        pubsub, tmp_path, capsys):
    """A topic source without subscription= says at start that a restart
    cannot resume it; with subscription=NAME its subscription is made on the
    topic (and found again by the next run); one that exists on another
    topic is refused in one line, exit status 2."""
    import io
    import pytest
    from google.cloud import pubsub_v1
    from pipelines import logs, options
    topic = pubsub.topic(f'named-{next(_names)}')
    other = pubsub.topic(f'other-{next(_names)}')
    pubsub.subscription(other, 'named-taken')
    args, _ = options.parse(logs.OPTIONS, [
        '--source', f'pubsub://{topic}', '--sink', f'parquet://{tmp_path}/out',
        '--trigger', 'late=1,lateness=1h,accumulating'])
    final_at = job_run._final_at(args)
    out = io.StringIO()
    job_run._recover(args, 'logs', final_at, out)
    assert 'a restart cannot resume it (give subscription=NAME' \
        in out.getvalue()
    sub = f'projects/{pubsub.PROJECT}/subscriptions/named-mine'
    for _ in range(2):         # made, then found again
        args.source = f'pubsub://{topic}?subscription=named-mine'
        out = io.StringIO()
        job_run._recover(args, 'logs', final_at, out)
        assert out.getvalue() == ''
        with pubsub_v1.SubscriberClient() as client:
            assert client.get_subscription(
                request={'subscription': sub}).topic == topic
    with pytest.raises(SystemExit) as err:
        job_run.start(logs, [
            '--source', f'pubsub://{topic}?subscription=named-taken',
            '--sink', f'parquet://{tmp_path}/out', '--streaming'])
    assert err.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith(f'subscription projects/{pubsub.PROJECT}/'
                         f'subscriptions/named-taken reads {other}, not '
                         f'{topic}'), line
    with pytest.raises(transforms_io.UriError, match='a subscription '
                       'already'):
        transforms_io.check_uri(
            f'pubsub://{sub}?subscription=named-mine', 'source')


def test_a_restart_writes_each_late_letter_of_a_video_report_once(
        pubsub, tmp_path):
    """video_qoe: a report too late for its session and for its rollups
    makes one late dead letter for the session (its payload) and one per
    rollup dimension (its contribution), each written on its own: a kill
    may leave some of them in the sink and not the others.  Each names the
    message and its output (``#message=ID&window=session|rollup&key=K``).
    A killed run left, unacknowledged, a report's letters for both, one
    report's for its session only and one report's for two of its four
    rollup dimensions only; the restart, whose watermark starts past every
    window, keeps each report out of exactly the outputs whose letters the
    sink holds: every report's letters are there exactly once.  (Before,
    those letters named no message: a restart wrote them all again.)"""
    from pipelines import video_qoe
    from transforms import aggregate
    from transforms.io import synthetic
    from tests.integration.video_letters import Letters
    records = list(synthetic.generate(transforms_io.parse_uri(
        'synthetic://video?sessions=8&seed=3')).records())
    payloads = [payload for _, payload in records if payload]
    sub, ids = _published(pubsub, 'video-late', payloads)
    source = f'pubsub://{sub}?stop=idle:2s'
    letters = Letters(payloads, lambda i: f'{source}#message={ids[i]}')
    killed = letters.killed()
    sink = tmp_path / 'out'
    letters.leave_in(sink, killed)
    horizon = max(float(t) for t, _ in records) + 86400
    _killed_state(sink, sub, horizon, lease=60)
    summary = job_run.run(video_qoe, [
        '--source', source, '--streaming', '--sink', f'parquet://{sink}',
        '--no-summary'])
    assert summary['read'] == len(payloads) and summary['balanced']
    table = letters.check(sink, summary, killed)
    # The letters that name no message are durations and exits of the
    # sessions' walks (they hold no report), and the decode dead letter.
    for row in table:
        if row['stage'] == aggregate.LATE_STAGE and \
                '&window=' not in row['source']:
            assert row['source'] == source and \
                row['reason'].startswith('0 record(s)')


@pytest.mark.parametrize('job', ['logs', 'trades', 'sensors'])
def test_a_restart_writes_each_sliding_window_late_letter_once(
        pubsub, tmp_path, job):
    """The Kafka test's twin (``tests/integration/sliding_letters.py``):
    sliding windows (2m/1m), a killed run left, unacknowledged, one
    message's late letter for its first window only; the restart, whose
    watermark starts past every window, keeps that message out of that
    window alone: every (message, window) late letter is in the sink
    exactly once, each naming its message, window and key
    (``#message=ID&window=OUTPUT@END&key=K``)."""
    from tests.integration.sliding_letters import SlidingLetters
    letters = SlidingLetters(job)
    sub, ids = _published(pubsub, f'sliding-late-{job}',
                          [p for _, p in letters.records])
    source = f'pubsub://{sub}?stop=idle:2s'
    sink = tmp_path / 'out'
    letters.leave_killed(sink, f'{source}#message={ids[letters.killed]}')
    horizon = max(float(t) for t, _ in letters.records) + 86400
    _killed_state(sink, sub, horizon, lease=60)
    summary = letters.run(source, sink)
    index = {f'message={m}': i for i, m in enumerate(ids)}
    letters.check(sink, source, summary, index.__getitem__)


def test_an_in_order_video_backlog_rolls_up_as_a_file_replay(
        pubsub, tmp_path):
    """video_qoe streaming from a Pub/Sub backlog of reports published in
    event-time order: nothing is late, so no late dead letter, and the
    final pane of every rollup window equals a file replay of the same
    lines.  The rollups come from the session walk's event-time timers;
    the local runner let the walk's output watermark pass a rollup window
    before those timers had fired: 1,352 and 1,376 of the 1,770 window
    assignments were kept as late in two runs (149 of the 163 rollup
    windows differed in the first)."""
    import pyarrow.dataset as ds
    from pipelines import video_qoe
    records = sorted(synthetic_records('synthetic://video?sessions=30&seed=5'),
                     key=lambda r: r[0])
    payloads = [payload for _, payload in records]
    sub, _ = _published(pubsub, 'video-backlog', payloads)
    trigger = 'late=1,lateness=2m,accumulating'
    streamed = tmp_path / 'stream'
    summary = job_run.run(video_qoe, [
        '--source', f'pubsub://{sub}?stop=idle:2s', '--streaming',
        '--sink', f'parquet://{streamed}', '--trigger', trigger,
        '--no-summary'])
    lines = tmp_path / 'in.log'
    lines.write_bytes(b'\n'.join(payloads) + b'\n')
    replayed = tmp_path / 'replay'
    oracle = job_run.run(video_qoe, [
        '--source', f'file://{lines}', '--sink', f'parquet://{replayed}',
        '--no-summary'])
    assert summary['read'] == len(payloads) and summary['balanced']
    assert summary['late_kept'] == summary['dropped_late'] == 0
    assert summary['aggregated'] == oracle['window_assignments']
    if (streamed / 'dead_letter').is_dir():
        stages = ds.dataset(f'{streamed}/dead_letter').to_table(
            columns=['stage']).column('stage').to_pylist()
        assert 'window.late' not in stages

    def final_rollups(sink):
        rows = ds.dataset(f'{sink}/qoe_rollups').to_table().to_pandas()
        keys = ['dimension', 'value', 'window_start']
        last = rows.loc[rows.groupby(keys)['pane_index'].idxmax()]
        return last.set_index(keys).drop(
            columns=['window_end', 'pane_timing', 'pane_index']).sort_index()
    expected = final_rollups(replayed)
    assert len(expected) == 163
    assert final_rollups(streamed).equals(expected)


def synthetic_records(uri):
    from transforms.io import synthetic
    return synthetic.generate(transforms_io.parse_uri(uri)).records()


def test_a_state_lists_the_held_messages_a_restart_keeps_out_of_final_windows(
        pubsub, tmp_path):
    """Sliding windows (2m/1m, no lateness), where a restart keeps a
    message it receives again out of those of its windows final at the
    state's horizon (windows.LateFrom.keeps_out): the horizon is not held
    before the windows of held messages.  'open' at T0+10 ([T0-60, T0+60)
    and [T0, T0+120)), held when the runner's horizon is T0+100: the state
    records T0+100 and lists 'open' as kept (in the final pane of its
    first window).  A message that may be late and is not settled (pending
    before its decode: in its window or its late letter not yet written, a
    restart could not tell) is never listed: where its first window is
    final at the horizon already recorded no state is written until it
    settles; else the horizon stops just before that window.  The oracle:
    each state's kept messages are those handed over, held, with a window
    closing by its horizon; none of them unsettled."""
    from google.cloud import pubsub_v1
    from transforms import windows
    from transforms.io import _kafka_commits, _pubsub_acks
    spec = windows.parse_window('sliding:2m/1m')
    trigger = windows.TriggerSpec(late=1, lateness=0.0)
    final_at = windows.FinalAt((spec,), 0.0)
    late_from = windows.LateFrom((spec,), trigger)
    assert late_from.keeps_out
    assert not windows.LateFrom((windows.parse_window('session:5m'), spec),
                                trigger).keeps_out
    names = [b'open', b'early', b'late', b'lagging', b'fixed']
    topic, sub, state = _fresh_ledger(pubsub, tmp_path, 'kept',
                                      names)

    def written():
        with open(state, encoding='utf-8') as f:
            return orjson.loads(f.read())

    def hold(name, at, stamped=None, maybe_late=False):
        ledger.hold(ids[name], by_data[name].ack_id, final_at(at),
                    at if stamped is None else stamped,
                    kept_from=late_from(at), maybe_late=maybe_late)

    def look_and_release(horizon, pending):
        ledger.read_started()
        _kafka_commits.prepare()
        time.sleep(_pubsub_acks.MIN_INTERVAL)
        _kafka_commits.release(horizon, pending)

    try:
        ledger = _pubsub_acks.track(sub, pubsub_v1.SubscriberClient)
        by_data, ids = _pulled(ledger, sub, len(names))
        hold(b'early', T0 - 70)               # final at T0
        hold(b'open', T0 + 10)                # first window closes T0+60
        look_and_release(T0 + 100, T0 + 100)
        first = written()
        # Before: just before T0+60 (the first window of 'open').
        assert first['h'] == T0 + 100
        assert first['ids'] == [ids[b'early']]
        assert first['kept'] == {ids[b'open']: T0 + 100}
        # 'late' at T0-30 ([T0-120, T0), [T0-60, T0+60)), read after that
        # state (late for its first window), pending (stamped T0+100)
        hold(b'late', T0 - 30, T0 + 100, maybe_late=True)
        look_and_release(T0 + 110, T0 + 99)
        assert written() == first             # no state until it settles
        look_and_release(T0 + 110, T0 + 200)  # settled: its letter written
        second = written()
        assert second['h'] == T0 + 110 and second['ids'] == [ids[b'late']]
        assert second['kept'] == {ids[b'open']: T0 + 110}
        # 'lagging' at T0+70 ([T0, T0+120), [T0+60, T0+180)), may be late,
        # not settled: the horizon stops just before T0+120 ('fixed',
        # final at T0+115, is acknowledged under it), 'lagging' not kept.
        hold(b'lagging', T0 + 70, T0 + 150, maybe_late=True)
        ledger.hold(ids[b'fixed'], by_data[b'fixed'].ack_id, T0 + 115,
                    T0 + 115)
        look_and_release(T0 + 130, T0 + 140)
        third = written()
        assert third['h'] == pytest.approx(T0 + 120, abs=0.01) and \
            third['h'] < T0 + 120
        assert third['ids'] == [ids[b'fixed']]
        assert third['kept'] == {ids[b'open']: third['h']}
        # A restart finds the kept messages in the state, and lists them
        # with their horizon at its own states until they come again
        # ('early2', undated, acknowledged before 'open' is delivered
        # again: a kill then must not forget 'open').
        _kafka_commits.forget()
        assert _pubsub_acks.recover(sub, state, 10) == (third['h'],
                                                        third['t'])
        assert _pubsub_acks.resume(sub).kept == {ids[b'open']: third['h']}
        ledger = _pubsub_acks.track(sub, pubsub_v1.SubscriberClient)
        _publish(topic, [b'early2'])
        received = []
        while not any(m.message.data == b'early2' for m in received):
            received += ledger.client.pull(
                subscription=sub, max_messages=1, timeout=10
            ).received_messages
        fresh = next(m for m in received if m.message.data == b'early2')
        ledger.hold(fresh.message.message_id, fresh.ack_id, float('-inf'),
                    float('-inf'))
        look_and_release(third['h'], third['h'])
        fourth = written()
        # (with the resumed state's ids, not yet come again)
        assert fourth['ids'] == [fresh.message.message_id, ids[b'fixed']]
        assert fourth['kept'] == {ids[b'open']: third['h']}
    finally:
        _kafka_commits.forget()


def test_a_restart_lists_the_resumed_ids_until_it_acknowledged_them(
        pubsub, tmp_path, monkeypatch):
    """A killed run's state lists 'once' in its ids (its final panes
    written, its acknowledgement maybe lost) and the killed run's lease on
    it still runs.  The restart acknowledges a message of its own before
    'once' comes again: its state lists 'once' too (else a kill now leaves
    a state by which the next restart reads 'once' again: counted twice).
    Delivered again and skipped, its acknowledgement not yet sent: a state
    still lists it.  Once the acknowledge call returned (settled), later
    states do not, and a delivery again is read once.  A restart of the
    state written before it came again skips it."""
    from google.cloud import pubsub_v1
    from transforms.io import _kafka_commits, _pubsub_acks
    monkeypatch.setattr(_pubsub_acks, 'MIN_INTERVAL', 0.0)
    topic, sub, state = _fresh_ledger(pubsub, tmp_path, 'carry', [b'once'])

    def written():
        with open(state, encoding='utf-8') as f:
            return orjson.loads(f.read())

    def acknowledge_own(name):
        # acknowledged by the restart: final once its dead letter is
        # written (an undatable payload), under the resumed horizon
        ledger.hold(ids[name], by_data[name].ack_id, float('-inf'),
                    float('-inf'))
        ledger.read_started()
        _kafka_commits.prepare()
        _kafka_commits.release(100.0, 100.0)
        assert ids[name] not in ledger.held
        return written()

    killed = pubsub_v1.SubscriberClient()
    try:
        # The killed run: 'once' pulled and leased for a minute, the state
        # (horizon 150 s) listing it.
        leased = []
        while not leased:
            leased = killed.pull(subscription=sub, max_messages=1,
                                 timeout=10).received_messages
        once = leased[0].message.message_id
        killed.modify_ack_deadline(subscription=sub, ack_ids=[
            leased[0].ack_id], ack_deadline_seconds=60)
        _killed_state(tmp_path, sub, 150.0, [once])
        _kafka_commits.forget()
        assert _pubsub_acks.recover(sub, state, 10)[0] == 150.0
        assert _pubsub_acks.resume(sub).ids == {once}
        ledger = _pubsub_acks.track(sub, pubsub_v1.SubscriberClient)
        _publish(topic, [b'first', b'second', b'third'])
        by_data, ids = _pulled(ledger, sub, 3)
        assert once not in ids.values()       # (still leased)
        # Before 'once' comes again.
        first = acknowledge_own(b'first')
        assert first['h'] == 150.0
        assert first['ids'] == [ids[b'first'], once]
        # Delivered again (the killed run's lease over), skipped, its
        # acknowledgement not yet returned.
        killed.modify_ack_deadline(subscription=sub, ack_ids=[
            leased[0].ack_id], ack_deadline_seconds=0)
        again = []
        while not again:
            again = ledger.client.pull(subscription=sub, max_messages=1,
                                       timeout=10).received_messages
        assert again[0].message.message_id == once
        assert acknowledge_own(b'second')['ids'] == [ids[b'second'], once]
        # Acknowledged (the call returned), as the read does.
        ledger.acknowledge([again[0].ack_id])
        ledger.settled([once])
        assert acknowledge_own(b'third')['ids'] == [ids[b'third']]
        assert ledger.acknowledged(once)
        # A restart of the state written before it came again skips it.
        _killed_state(tmp_path, sub, first['h'], first['ids'])
        _kafka_commits.forget()
        assert _pubsub_acks.recover(sub, state, 10)[0] == 150.0
        assert _pubsub_acks.resume(sub).ids == {ids[b'first'], once}
    finally:
        killed.close()
        _kafka_commits.forget()


def test_two_restarts_read_a_message_whose_final_panes_were_written_once(
        pubsub, tmp_path):
    """Run 1 (a state written for it) was killed while acknowledging the
    messages of the windows final at its horizon (their final panes
    written; here: none in the sink, the replay leaves them out too), its
    lease on them still running.  Run 2, the logs job as a process,
    acknowledges messages of its own (the stream's undatable ones, final
    once their dead letters are written) before those come again, and is
    killed (SIGKILL) once its state lists them.  Run 3 resumes run 2's
    state, the killed run 1's messages coming again: it skips them, and
    its final panes and dead letters equal a file replay of the rest.
    (Before, run 2's state listed its own messages alone: run 3 read run
    1's again, late for their windows final at the horizon, one late dead
    letter each beside the final panes that count them.)"""
    import signal
    import subprocess
    from pipelines import logs
    from transforms import deadletter, windows
    from transforms.decode import decode_payload
    from transforms.io import _pubsub_acks, synthetic
    from transforms.logs import decoders
    from tests.integration.test_kill_restart import REPO, _against_replay, \
        _job
    from tests.integration.test_kill_restart_pubsub import \
        _until_acknowledging
    records = list(synthetic.generate(transforms_io.parse_uri(
        'synthetic://logs?events=1500&seed=3&rate=2')).records())
    # Run 1's horizon: the windows of the first four minutes final.
    start = min(t for t, _ in records)
    horizon = windows.FinalAt((windows.parse_window('fixed:60s'),),
                              3600.0)(start + 180)
    decoder = decoders.make_decoder('auto')
    first = [i for i, (t, payload) in enumerate(records)
             if t < start + 240 and not isinstance(
                 decode_payload(payload, decoder, 'decode'),
                 deadletter.DeadLetter)]
    taken = set(first)
    rest = [r for i, r in enumerate(records) if i not in taken]
    assert len(first) > 400 and any(
        isinstance(decode_payload(p, decoder, 'decode'),
                   deadletter.DeadLetter) for _, p in rest)
    topic = pubsub.topic(f'twice-{next(_names)}')
    sub = pubsub.subscription(topic, f'twice-sub-{next(_names)}',
                              ack_deadline_seconds=10)
    # Run 1's messages, leased by it until after run 2 is killed.
    ids = _publish(topic, [records[i][1] for i in first], seq=str)
    from google.cloud import pubsub_v1
    killed = pubsub_v1.SubscriberClient()
    leased = {}
    while len(leased) < len(ids):
        pulled = killed.pull(subscription=sub, max_messages=500,
                             timeout=10).received_messages
        if pulled:
            killed.modify_ack_deadline(
                subscription=sub, ack_ids=[m.ack_id for m in pulled],
                ack_deadline_seconds=120)
        leased.update((m.message.message_id, m.ack_id) for m in pulled)
    assert set(leased) == set(ids)
    _publish(topic, [payload for _, payload in rest], seq=str)
    sink = tmp_path / 'out'
    sink.mkdir()
    _killed_state(sink, sub, horizon, ids)
    state = _pubsub_acks.state_path(str(sink), sub)
    with open(state, encoding='utf-8') as f:
        before = f.read()
    run2 = subprocess.Popen(
        _job(f'pubsub://{sub}?stop=never', sink, True), cwd=REPO,
        env={**os.environ, 'PYTHONPATH': REPO}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        _until_acknowledging(run2, state, before, 90)
        assert run2.poll() is None, 'run 2 ended before it acknowledged'
    finally:
        run2.send_signal(signal.SIGKILL)
        run2.wait()
    with open(state, encoding='utf-8') as f:
        written = orjson.loads(f.read())
    own = set(written['ids']) - set(ids)
    assert own and written['h'] == horizon and not written['ended']
    # Run 1's leases expire: its messages come again.
    try:
        killed.modify_ack_deadline(subscription=sub, ack_ids=list(
            leased.values()), ack_deadline_seconds=0)
    finally:
        killed.close()
    summary = job_run.run(logs, [
        '--source', f'pubsub://{sub}?stop=idle:2s', '--streaming',
        '--sink', f'parquet://{sink}', '--trigger',
        'late=1,lateness=1h,accumulating', '--no-summary'])
    assert summary['balanced']
    (got, expected, _, lost, twice, late, _, missing,
     extra) = _against_replay(sink, rest, tmp_path)
    assert late == summary['late_kept'] == 0
    assert expected and (lost, twice) == (0, 0) and got == expected
    assert not missing and not extra
    assert summary['filters'].get('replayed_final', 0) >= len(ids)


def test_a_message_acknowledged_and_delivered_again_is_read_once(
        pubsub, tmp_path):
    """Pub/Sub delivers at least once: a message whose acknowledgement
    crosses its redelivery comes again after the run acknowledged it (no
    longer held).  The ledger remembers what this run acknowledged
    (REMEMBER_SECONDS), so that the read skips it (counted
    ``pubsub.delivered_again``, acknowledged again) instead of writing its
    outputs twice; a message never acknowledged is not remembered."""
    from google.cloud import pubsub_v1
    from transforms.io import _kafka_commits, _pubsub_acks
    topic = pubsub.topic(f'again-{next(_names)}')
    sub = pubsub.subscription(topic, f'again-sub-{next(_names)}',
                              ack_deadline_seconds=10)
    _publish(topic, [b'one', b'two'])
    _kafka_commits.forget()
    _pubsub_acks.recover(sub, _pubsub_acks.state_path(str(tmp_path), sub),
                         10)
    try:
        ledger = _pubsub_acks.track(sub, pubsub_v1.SubscriberClient)
        received = []
        while len(received) < 2:
            received += ledger.client.pull(subscription=sub, max_messages=2,
                                           timeout=10).received_messages
        one, two = sorted(received, key=lambda m: m.message.data)
        ledger.hold(one.message.message_id, one.ack_id, T0, T0)
        ledger.hold(two.message.message_id, two.ack_id, T0 + 500, T0)
        ledger.read_started()
        _kafka_commits.prepare()
        _kafka_commits.release(T0 + 100, T0 + 100)
        assert ledger.acknowledged(one.message.message_id)
        assert not ledger.acknowledged(two.message.message_id)
        # (held, not acknowledged: a delivery again keeps the new ack id)
        assert not ledger.hold(two.message.message_id, 'again', T0 + 500,
                               T0)
        # forgotten after REMEMBER_SECONDS
        _pubsub_acks._remember_acknowledged(  # pylint: disable=protected-access
            ledger, [], time.time() + _pubsub_acks.REMEMBER_SECONDS + 1)
        assert not ledger.acknowledged(one.message.message_id)
    finally:
        _kafka_commits.forget()


def test_a_restart_keeps_the_price_anomalies_of_windows_judged_before_its_horizon(
        pubsub, tmp_path):
    """The Kafka case of tests/integration/test_kafka.py on a subscription:
    an uninterrupted run of the trades job on one subscription, then, on a
    second subscription of the same topic, the state a killed run left
    (horizon 1.5 h into the stream, the trades whose windows were final
    then acknowledged) beside a sink holding all the uninterrupted run
    wrote: the resumed run's price anomalies equal the uninterrupted
    run's, none lost, none twice."""
    import shutil
    from pipelines import trades
    from transforms import windows
    from transforms.io import synthetic
    from tests.integration.test_kafka import (TRADES_RESTART, TRADES_STREAM,
                                              _anomalies)
    records = [(t, payload) for t, payload in synthetic.generate(
        transforms_io.parse_uri(TRADES_STREAM)).records() if payload]
    topic = pubsub.topic(f'trades-{next(_names)}')
    whole_sub, resumed_sub = (
        pubsub.subscription(topic, f'{name}-{next(_names)}',
                            ack_deadline_seconds=10)
        for name in ('whole', 'resumed'))
    ids = _publish(topic, [payload for _, payload in records])
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    job_run.run(trades, TRADES_RESTART + [
        '--source', f'pubsub://{whole_sub}?stop=idle:2s',
        '--sink', f'parquet://{whole}'])
    expected = _anomalies(whole, 'price')
    shutil.copytree(whole, resumed)
    horizon = min(t for t, _ in records) + 5400 + 150
    # The job's rule: bars with an hour of lateness, anomaly windows none.
    final_at = windows.FinalAt((windows.parse_window('fixed:60s'),
                                windows.parse_window('fixed:5m')), 3600.0,
                               (None, 0.0))
    acknowledged = [i for (t, _), i in zip(records, ids)
                    if final_at(t) <= horizon]
    _killed_state(resumed, resumed_sub, horizon, acknowledged, lease=60)
    summary = job_run.run(trades, TRADES_RESTART + [
        '--source', f'pubsub://{resumed_sub}?stop=idle:2s',
        '--sink', f'parquet://{resumed}'])
    assert summary['read'] == len(records) and summary['balanced']
    assert summary['filters'].get('replayed_final') == len(acknowledged) > 0
    assert any(horizon - 3600 < key[4].timestamp() <= horizon
               for key in expected)
    assert _anomalies(resumed, 'price') == expected
    assert not summary['late_kept']


def test_a_window_of_a_message_that_may_be_late_waits_until_it_is_settled(
        pubsub, tmp_path, monkeypatch):
    """Two messages of a window closing at 100 s: one read at a watermark
    of 50 s, one read at 130 s (it may be late: its value is stamped past
    its window), handed over but not settled (something stamped at 120 s is
    pending: it may be pending before its decode).  The runner's horizon
    is past the window (150 s) whichever it is; the window stays open for
    the state and for acknowledging until the second is settled.  (Before,
    the state recorded 150 s and the first message was acknowledged: a
    restart kept the window's final pane and read the second again, late
    under its watermark: in the pane and in a late dead letter, or, had
    the window been rolled back, the first one lost.)"""
    from google.cloud import pubsub_v1
    from transforms.io import _kafka_commits, _pubsub_acks
    monkeypatch.setattr(_pubsub_acks, 'MIN_INTERVAL', 0.0)
    topic, sub, state = _fresh_ledger(pubsub, tmp_path, 'settle',
                                      [b'in time', b'maybe late'])
    try:
        ledger = _pubsub_acks.track(sub, pubsub_v1.SubscriberClient)
        by_data, ids = _pulled(ledger, sub, 2)
        ledger.hold(ids[b'in time'], by_data[b'in time'].ack_id, 100.0, 50.0)
        ledger.hold(ids[b'maybe late'], by_data[b'maybe late'].ack_id,
                    100.0, 130.0)
        ledger.read_started()
        with open(state, encoding='utf-8') as f:
            before = f.read()          # (the fresh start's)
        _kafka_commits.prepare()
        _kafka_commits.release(150.0, 120.0)
        # Nothing acknowledged, no state written.
        assert set(ledger.held) == set(ids.values())
        with open(state, encoding='utf-8') as f:
            assert f.read() == before
        # Settled: both acknowledged, the state past the window.
        _kafka_commits.prepare()
        _kafka_commits.release(150.0, 150.0)
        assert not ledger.held
        with open(state, encoding='utf-8') as f:
            written = orjson.loads(f.read())
        assert sorted(written['ids']) == sorted(ids.values())
        assert written['h'] == 150.0
    finally:
        _kafka_commits.forget()



def test_every_late_dead_letter_of_a_disordered_stream_names_its_message(
        pubsub, tmp_path):
    """The twin of the Kafka test: a live stream, every 40th record
    arriving 200 records (100 s) late, the allowed lateness 30 s, published
    in parts while the job reads: every record kept late is a dead letter
    naming its message (so that a restart does not write it again, or
    count it in its window as well), every record is in its window or a
    dead letter once."""
    import collections
    import pyarrow.dataset as ds
    from pipelines import logs
    from transforms import aggregate
    from tests.integration.test_kill_restart import over_time
    records = [(t, p) for t, p in synthetic_records(
        'synthetic://logs?events=4000&seed=11&rate=2') if p]
    stream = list(records)
    for i in range(40, len(records) - 300, 40):
        stream.remove(records[i])
        stream.insert(i + 200, records[i])
    payloads = [payload for _, payload in stream]
    topic = pubsub.topic(f'disordered-{next(_names)}')
    sub = pubsub.subscription(topic, f'disordered-sub-{next(_names)}',
                              ack_deadline_seconds=10)
    source = f'pubsub://{sub}?stop=idle:3s'
    ids = []
    producer = over_time(lambda chunk: ids.extend(_publish(topic, chunk)),
                         payloads, chunks=-(-len(payloads) // 500),
                         every=1.0)
    try:
        summary = job_run.run(logs, [
            '--source', source, '--streaming', '--sink',
            f'parquet://{tmp_path}/out', '--trigger',
            'late=1,lateness=30s,accumulating', '--no-summary'])
    finally:
        producer.join()
    assert summary['read'] == len(payloads) and summary['balanced']
    assert summary['late_kept'] > 0
    table = ds.dataset(f'{tmp_path}/out/dead_letter').to_table(
        columns=['stage', 'source']).to_pylist()
    late = [row['source'] for row in table
            if row['stage'] == aggregate.LATE_STAGE]
    assert len(late) == summary['late_kept']
    unnamed = [s for s in late if not s.startswith(f'{source}#message=')]
    assert not unnamed, f'{len(unnamed)} of {len(late)} name no message'
    assert max(collections.Counter(row['source'] for row in table)
               .values()) == 1
