"""Crash safety with sliding windows, for the jobs beside ``logs`` (whose
case is in test_kill_restart.py): ``trades`` and ``sensors`` with
``--window sliding:2m/1m`` and ``video_qoe`` with ``--rollup_window
sliding:2m/1m``, each reading a 4-partition Kafka topic (or a Pub/Sub
subscription of the emulator), killed (SIGKILL) at random moments and
started again with the same group (subscription) into the same sink.  Each record is in two windows, the first closing a period before the
second: a restart reads again records of which one window may be final,
and none may then be a late dead letter beside its assignment in that
final pane.  The final pane of every window must equal a file replay with
the same windows: nothing lost, nothing counted twice, no late dead letter
(the streams are in order within the allowed lateness), the decode dead
letters the replay's, payload by payload.

KILLS (environment, default 3) and SEED as in test_kill_restart.py.  On
the code before per-window letters for trades and sensors (no
``late_from``: a commit's horizon passed the first window of records a
restart reads again), a kill after a mid-run commit left assignments both
in a final pane and a late dead letter (late > 0)."""
import os
import random
import signal
import subprocess
import time

import pytest

from pipelines import sensors, trades, video_qoe
from transforms import io as transforms_io
from transforms.io import _pubsub_acks, synthetic

from tests.integration.test_kafka import fresh, produce
from tests.integration.test_kill_restart import (REPO, KILLS, Job,
                                                 _against_replay, _job,
                                                 kill_and_restart)
from tests.integration.test_kill_restart_pubsub import (
    _acknowledged, _publish, _text, _until_acknowledging)

SLIDING = 'sliding:2m/1m'

# job -> (the job as the kill test runs it, its stream: a few thousand
# records over about three hours of event time, so that windows turn final
# (end + 1 h of lateness) while the stream is read)
CASES = {
    'trades': (Job(trades, 'bars', ('symbol',),
                   ('trade_count', 'duplicate_count', 'volume', 'open',
                    'high', 'low', 'close')),
               'synthetic://trades?events=3000&seed=11&rate=0.25'),
    'sensors': (Job(sensors, 'stats', ('sensor_id', 'metric'),
                    ('count', 'uncalibrated_count', 'min', 'max')),
                'synthetic://sensors?events=3000&seed=11&sensors=2'
                '&interval=8'),
    'video_qoe': (Job(video_qoe, 'qoe_rollups', ('dimension', 'value'),
                      ('count', 'plays', 'errors', 'failures',
                       'rebuffer_ms', 'playing_ms',
                       'exits_before_video_start'),
                      ('--rollup_window', SLIDING)),
                  'synthetic://video?sessions=150&span=120&late=0&seed=11'),
}


def _pubsub_kills(pubsub, name, records, argv_of, tmp_path):
    """The stream ``records`` on a new topic, read through a subscription
    by the job ``argv_of(source)``, killed KILLS times (every other run a
    moment after it has acknowledged messages, the others at a random
    moment), then run to its end.  Returns (kills, kills after
    acknowledging, the seed)."""
    topic = pubsub.topic(name)
    subscription = pubsub.subscription(
        topic, f'{name}-in', ack_deadline_seconds=_pubsub_acks.LEASE_SECONDS)
    _publish(topic, [payload for _, payload in records])
    sink = tmp_path / 'out'
    argv = argv_of(f'pubsub://{subscription}?stop=idle:4s')
    env = {**os.environ, 'PYTHONPATH': REPO}
    seed = int(os.environ.get('SEED') or random.randrange(10**6))
    moments = random.Random(seed)
    state = _pubsub_acks.state_path(str(sink), subscription)
    kills = partial = 0
    for attempt in range(KILLS):
        before = _text(state)
        job = subprocess.Popen(argv, cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        if attempt % 2:
            _until_acknowledging(job, state, before,
                                 moments.uniform(3.0, 8.0))
            time.sleep(moments.uniform(0.0, 1.0))
        else:
            time.sleep(moments.uniform(1.5, 4.5))
        if job.poll() is None:
            job.send_signal(signal.SIGKILL)
            kills += 1
            job.wait()
            partial += _acknowledged(sink, subscription)
        job.wait()
    last = subprocess.run(argv, cwd=REPO, env=env, capture_output=True,
                          timeout=400, check=False)
    assert last.returncode == 0, last.stderr.decode()[-2000:]
    return kills, partial, seed


@pytest.mark.parametrize('broker', ['kafka', 'pubsub'])
@pytest.mark.parametrize('name', sorted(CASES))
def test_killed_and_restarted_sliding_windows_equal_a_replay(
        tmp_path, request, name, broker):
    job, uri = CASES[name]
    window = None if name == 'video_qoe' else SLIDING
    records = [(t, payload) for t, payload in synthetic.generate(
        transforms_io.parse_uri(uri)).records() if payload]
    sink = tmp_path / 'out'
    if broker == 'kafka':
        kafka = request.getfixturevalue('kafka')
        topic = fresh(kafka)
        produce(kafka, topic, records)
        source = f'kafka://{kafka.brokers}/{topic}?group=kills&stop=idle:4s'
        argv = _job(source, sink, True, window, job)
        # (With sliding windows nothing is committed before a run's read
        # ends, so a kill waiting for a commit would find the run ended:
        # every kill comes at a random moment of the run, some after a
        # commit, where one comes, as on the code before, which committed
        # mid-run.)
        kills, seed, commits = kill_and_restart(
            kafka, topic, argv, tmp_path, commit_wait=(3.0, 8.0))
    else:
        kills, partial, seed = _pubsub_kills(
            request.getfixturevalue('pubsub'), f'sliding-{name}', records,
            lambda source: _job(source, sink, True, window, job), tmp_path)
        commits = f'{partial} kills after acknowledging part of the stream'
    (got, expected, oracle, lost, twice, late, decode_dead, dead_missing,
     dead_twice) = _against_replay(sink, records, tmp_path, window, job)
    print(f'\nsliding kill test ({name}, {broker}, seed {seed}): {kills} '
          f'kills, {len(records)} records, {len(expected)} windows; lost '
          f'{lost}, counted twice {twice}; dead letters {decode_dead} '
          f'(replay {oracle["dead_lettered"]}; missing '
          f'{sum(dead_missing.values())}, twice '
          f'{sum(dead_twice.values())}), late {late}; {commits}')
    assert kills >= 1
    assert lost == 0 and twice == 0
    assert got == expected
    # No assignment both in a final pane and a late dead letter: the
    # stream is in order within the lateness, so none is late at all.
    assert late == 0
    assert not dead_missing and not dead_twice
    assert decode_dead == oracle['dead_lettered']
