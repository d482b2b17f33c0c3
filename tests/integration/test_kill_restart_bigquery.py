"""Crash safety of a job writing a ``bigquery://`` sink on the local runner:
the job reads Kafka (a consumer group) or Pub/Sub (a subscription), is
killed (SIGKILL) twice, each time just after it wrote rows of its own (the
restart: the panes it rolled back, written again), and is started again
into the same BigQuery dataset (the emulator); the rows read back must
hold, per window, exactly one final pane equal to a file replay's, and the
replay's dead letters once each.  Without the roll-back the killed runs' panes stay
beside the restart's (the same pane twice, or a stale pane of a higher
index).  See transforms/io/bigquery.py (roll_back, AckState).  SEED
(environment) plays the same kill moments again (printed with pytest -s)."""
import collections
import itertools
import os
import random
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest

from pipelines import logs, run
from transforms import io as transforms_io
from transforms.io import _pubsub_acks, bigquery as bq_sink, synthetic

from tests.integration.test_kafka import fresh, produce

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
EVENTS = 10000
FIELDS = ['count', 'errors', 'latency_count', 'latency_min_ms',
          'latency_max_ms']
_names = itertools.count()


def _query(bigquery, sql):
    return [dict(r) for r in bigquery.client().query(sql).result()]


def _table(bigquery, ds_name, table):
    from google.api_core import exceptions
    try:
        return _query(bigquery, f'SELECT * FROM `{bigquery.PROJECT}.'
                                f'{ds_name}.logs_{table}`')
    except exceptions.NotFound:
        return []


def _count(bigquery, ds_name, table, since=0.0):
    """The rows of ``table`` (written after ``since``, wall-clock s)."""
    from google.api_core import exceptions
    from google.cloud import bigquery as bq
    try:
        return list(bigquery.client().query(
            f'SELECT COUNT(*) AS n FROM `{bigquery.PROJECT}.{ds_name}.'
            f'logs_{table}` WHERE written_at > TIMESTAMP_MICROS(@since)',
            job_config=bq.QueryJobConfig(query_parameters=[
                bq.ScalarQueryParameter('since', 'INT64',
                                        int(since * 1e6))])).result())[0].n
    except exceptions.NotFound:
        return 0


def _final_panes(rows):
    """(service, window start) -> (the fields of its highest pane, how many
    rows hold that pane)."""
    best = {}
    for r in rows:
        window = (r['service'], r['window_start'].timestamp())
        fields = tuple(r[f] for f in FIELDS)
        found = best.get(window)
        if found is None or r['pane_index'] > found[0]:
            best[window] = (r['pane_index'], fields, 1)
        elif r['pane_index'] == found[0]:
            best[window] = (found[0], fields if fields == found[1] else
                            ('differ',), found[2] + 1)
    return {w: (fields, n) for w, (_, fields, n) in best.items()}


def _replay(records, tmp_path):
    path = tmp_path / 'all.log'
    path.write_bytes(b'\n'.join(p for _, p in records) + b'\n')
    oracle = run.run(logs, ['--source', f'file://{path}', '--sink',
                            f'parquet://{tmp_path}/replay', '--no-summary'])
    table = ds.dataset(f'{tmp_path}/replay/service_stats').to_table() \
        .to_pandas()
    final = table.sort_values('pane_index').groupby(
        ['service', 'window_start']).tail(1)
    expected = {(r.service, r.window_start.timestamp()):
                tuple(getattr(r, f) for f in FIELDS)
                for r in final.itertuples(index=False)}
    dead = ds.dataset(f'{tmp_path}/replay/dead_letter').to_table() \
        .column('raw').to_pylist()
    return oracle, expected, collections.Counter(dead)


def _kafka_source(request, records):
    kafka = request.getfixturevalue('kafka')
    topic = fresh(kafka)
    produce(kafka, topic, records)
    return f'kafka://{kafka.brokers}/{topic}?group=bq&stop=idle:4s'


def _pubsub_source(request, records):
    from google.cloud import pubsub_v1
    pubsub = request.getfixturevalue('pubsub')
    name = f'bq-kills-{next(_names)}'
    topic = pubsub.topic(name)
    # A restart waits for the killed run's leases to expire: the ack
    # deadline, at least the lease the read keeps.
    subscription = pubsub.subscription(
        topic, f'{name}-in', ack_deadline_seconds=_pubsub_acks.LEASE_SECONDS)
    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000))
    for future in [publisher.publish(topic, payload, seq=str(i))
                   for i, (_, payload) in enumerate(records)]:
        future.result(60)
    return f'pubsub://{subscription}?stop=idle:4s'


@pytest.mark.parametrize('source_kind', ['kafka', 'pubsub'])
def test_killed_and_restarted_into_bigquery_the_final_panes_equal_a_replay(
        bigquery, tmp_path, request, source_kind):
    # Two records a second: the stream spans hours, so that windows turn
    # final (end + 1h lateness) while it is read, and records are committed
    # mid-run.
    uri = transforms_io.parse_uri(
        f'synthetic://logs?events={EVENTS}&seed=11&rate=2')
    records = list(synthetic.generate(uri).records())
    ds_name = f'kills{next(_names)}_{source_kind}'
    bigquery.client().create_dataset(ds_name)
    source = (_kafka_source if source_kind == 'kafka' else _pubsub_source)(
        request, records)
    argv = [sys.executable, '-m', 'pipelines', 'logs', '--streaming',
            '--source', source, '--sink',
            f'bigquery://{bigquery.PROJECT}:{ds_name}.logs_'
            f'?method=streaming_inserts',
            '--trigger', 'late=1,lateness=1h,accumulating', '--no-summary']
    env = {**os.environ, 'PYTHONPATH': REPO}
    seed = int(os.environ.get('SEED') or random.randrange(10**6))
    moments = random.Random(seed)
    kills, rows_at_kills = 0, []
    for attempt in range(2):
        started = time.time()
        job = subprocess.Popen(argv, cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while job.poll() is None and time.monotonic() < deadline:
            # Once the run has written panes of its own (the restart
            # writes those it rolled back again, as LATE panes: its
            # watermark resumes where the killed run committed).
            if _count(bigquery, ds_name, 'service_stats', started):
                break
            time.sleep(0.2)
        time.sleep(moments.uniform(0.0, 0.5))
        if job.poll() is None:
            job.send_signal(signal.SIGKILL)
            kills += 1
            rows_at_kills.append(_count(bigquery, ds_name, 'service_stats'))
        job.wait()
    last = subprocess.run(argv, cwd=REPO, env=env, capture_output=True,
                          timeout=400, check=False)
    assert last.returncode == 0, last.stderr.decode()[-2000:]

    oracle, expected, dead_expected = _replay(records, tmp_path)
    got = _final_panes(_table(bigquery, ds_name, 'service_stats'))
    repeated = {w: n for w, (_, n) in got.items() if n > 1}
    wrong = {w for w in expected.keys() | got.keys()
             if got.get(w, (None,))[0] != expected.get(w)}
    # Records lost / counted twice by a plain SUM of the final panes' counts
    # (every row holding a window's highest pane counts).
    counts = {w: fields[0] * n if fields != ('differ',) else 0
              for w, (fields, n) in got.items()}
    lost = sum(max(0, e[0] - counts.get(w, 0)) for w, e in expected.items())
    twice = sum(max(0, n - expected.get(w, (0,))[0])
                for w, n in counts.items())
    dead = _table(bigquery, ds_name, 'dead_letter')
    dead_got = collections.Counter(d['raw'] for d in dead
                                   if d['stage'] != 'window.late')
    print(f'\nbigquery kill test ({source_kind}, seed {seed}): {kills} kills '
          f'(service_stats rows at the kills {rows_at_kills}), '
          f'{len(records)} records, {len(expected)} windows; lost {lost}, '
          f'counted twice {twice}; final panes written more than once '
          f'{len(repeated)}, differing from the replay {len(wrong)}; '
          f'dead letters {sum(dead_got.values())} (replay '
          f'{oracle["dead_lettered"]})')
    assert kills == 2 and rows_at_kills[0] > 0
    assert lost == 0 and twice == 0
    assert not repeated
    assert not wrong
    assert {w: fields for w, (fields, _) in got.items()} == expected
    assert sum(f[0] for f, _ in got.values()) == oracle['decoded']
    assert dead_got == dead_expected
    assert all(d['stage'] != 'window.late' for d in dead)
    if source_kind == 'pubsub':
        # The last run ended: its state says so, the next starts afresh.
        state = _query(bigquery, f'SELECT state FROM `{bigquery.PROJECT}.'
                       f'{ds_name}.logs_{bq_sink.ACK_STATE_TABLE}` '
                       f'ORDER BY sequence DESC LIMIT 1')
        assert '"ended":true' in state[0]['state']


def test_a_restart_into_bigquery_lists_the_resumed_ids_in_its_state(
        bigquery, pubsub):
    """The Pub/Sub state kept in the sink's dataset (AckState) goes the
    way of the state file (tests/integration/test_pubsub.py,
    test_a_restart_lists_the_resumed_ids_until_it_acknowledged_them): a
    restart's state, written before the resumed state's message 'once'
    comes again, lists it beside the restart's own message; once it came
    again, was skipped and acknowledged, the next does not."""
    from google.cloud import pubsub_v1
    from transforms.io import _kafka_commits
    topic = pubsub.topic(f'carry-{next(_names)}')
    sub = pubsub.subscription(topic, f'carry-sub-{next(_names)}',
                              ack_deadline_seconds=10)
    ds_name = f'carry{next(_names)}'
    bigquery.client().create_dataset(ds_name)
    state = bq_sink.AckState(transforms_io.parse_uri(
        f'bigquery://{bigquery.PROJECT}:{ds_name}.logs_'
        f'?method=streaming_inserts'), sub)
    assert state.read() is None           # (the table made)
    publisher = pubsub_v1.PublisherClient()
    once, own, last = (publisher.publish(topic, data).result(30)
                       for data in (b'once', b'own', b'last'))
    _kafka_commits.forget()
    state.write({'h': 150.0, 't': time.time(), 'ids': [once],
                 'ended': False})
    try:
        assert _pubsub_acks.recover(sub, state, 10)[0] == 150.0
        ledger = _pubsub_acks.track(sub, pubsub_v1.SubscriberClient)
        received = {}
        while len(received) < 3:
            received.update(
                (m.message.message_id, m) for m in ledger.client.pull(
                    subscription=sub, max_messages=3,
                    timeout=10).received_messages)

        def acknowledge_own(message_id):
            ledger.hold(message_id, received[message_id].ack_id,
                        float('-inf'), float('-inf'))
            ledger.read_started()
            _kafka_commits.prepare()
            time.sleep(_pubsub_acks.MIN_INTERVAL)
            _kafka_commits.release(100.0, 100.0)
            return state.read()

        first = acknowledge_own(own)
        assert first['h'] == 150.0 and first['ids'] == [own, once]
        # 'once' delivered again (here: pulled with the others), skipped
        # and acknowledged, as the read does.
        ledger.acknowledge([received[once].ack_id])
        ledger.settled([once])
        assert acknowledge_own(last)['ids'] == [last]
    finally:
        _kafka_commits.forget()
