"""Crash safety of the trades, sensors and video_qoe jobs on the local
runner, on Kafka (a consumer group) and on Pub/Sub (a subscription of the
emulator): each job reads its synthetic stream (disorder, stragglers,
duplicates and malformed records as generated), runs as a process in
streaming mode, is killed (SIGKILL) at random moments, is started again
with the same group or subscription into the same sink, and the final pane
of every window of its windowed tables must equal a file replay of the same
records: nothing lost, nothing counted twice, every dead letter once.

What is compared, per job (see docs/reliability.md, "Every job"):

- trades: ``bars`` (the final pane per symbol and window, every field).
  Its anomalies are not: a price is judged once per anomaly window, in
  its ON_TIME pane (a straggler after the window's end is never judged in
  a stream, always in a replay), and gaps come from one keyed state over
  bars that a restart rebuilds from the windows it reads again.  (On this
  stream, a trade every 4 s, no anomaly
  window reaches --anomaly_min_trades: the table is empty on both sides.)
- sensors: ``stats`` (the final pane per sensor, metric and window, every
  field).  Its incidents are not: the detector runs in the global window,
  its state (EWMA, variance, the last reading judged, silence timers) is
  kept in memory and rebuilt after a restart from the readings read
  again, so an incident may be reported again or differently.
- video_qoe: ``sessions`` (per session window) and ``qoe_rollups`` (per
  dimension, value and window).  Session windows never close before a
  stream's read ends, so ``stop=idle:`` ends each run; a kill costs the
  whole run.  Its alerts are not compared (a hysteresis state, as above).
  Its source's ``watermark_lag`` covers the stream's stragglers (7m: none
  arrives 6 min after a later report): the session walk takes a report
  behind the watermark only in part (docs/video_qoe.md), in any run,
  killed or not, so a lag that lets stragglers fall behind it would make
  the walk's fields depend on where a read checkpoints, not on kills.

KILLS (environment, default 2) sets how many kills each case makes; the
random moments come from a seed printed with the figures (pytest -s; SEED
(environment) plays the same moments again)."""
import math
import os
import random
import signal
import subprocess
import threading
import time
import typing

import pytest

from pipelines import sensors, trades, video_qoe
from transforms import io as transforms_io
from transforms.io import _pubsub_acks, synthetic

from tests.integration.test_kafka import fresh, produce
from tests.integration.test_kill_restart import (
    Job as Compared, _Commits, _against_replay, _final_panes, _job, _rows)
from tests.integration.test_kill_restart_pubsub import (
    _acknowledged, _publish, _text, _until_acknowledging)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
KILLS = int(os.environ.get('KILLS', '2'))


class Table(typing.NamedTuple):
    """A windowed output table compared with the replay's: its name, the
    columns naming a window of it, and the fields compared (the first one
    counts the records in the window)."""
    name: str
    keys: tuple
    fields: tuple


def _compared(module, table) -> Compared:
    """``table`` of the job ``module`` as the kill-test helpers take it."""
    return Compared(module, table.name,
                    tuple(k for k in table.keys if k != 'window_start'),
                    table.fields)


class Job(typing.NamedTuple):
    module: typing.Any
    stream: str          # the synthetic stream, a few thousand records
    tables: tuple        # of Table, the first one's count checked for
    #                      records lost and counted twice
    unchecked: str       # the table of detector output, not compared
    # source parameters added to the Kafka and Pub/Sub URIs
    params: str = ''


# Each stream spans hours of event time, well past the lateness of the kill
# tests' trigger (late=1,lateness=1h,accumulating), and arrives in
# CHUNKS parts, one a second: windows turn final, and offsets are
# committed or messages acknowledged, while it is read.
CHUNKS = 6
VIDEO_LAG_SECONDS = 420
JOBS = {
    'trades': Job(
        trades, 'synthetic://trades?events=3000&seed=42&rate=0.25',
        (Table('bars', ('symbol', 'window_start'),
               ('trade_count', 'duplicate_count', 'open', 'high', 'low',
                'close', 'volume', 'vwap', 'first_trade_time',
                'last_trade_time')),), 'anomalies'),
    'sensors': Job(
        sensors, 'synthetic://sensors?events=3000&seed=42&interval=60',
        (Table('stats', ('sensor_id', 'metric', 'window_start'),
               ('count', 'mean', 'min', 'max', 'stddev', 'p50', 'p95',
                'slope', 'intercept', 'calibration_version',
                'uncalibrated_count')),), 'anomalies'),
    'video_qoe': Job(
        video_qoe, 'synthetic://video?sessions=300&seed=42&span=180',
        (Table('sessions', ('session_id', 'window_start'),
               ('report_count', 'window_end', 'content_id', 'cdn',
                'stream_type', 'streaming_format', 'session_start',
                'session_end', 'video_start_time_ms', 'rebuffer_count',
                'rebuffer_ms', 'playing_ms', 'rebuffering_ratio',
                'error_count', 'failed', 'exit_before_video_start',
                'bitrate_switches', 'avg_bitrate_kbps')),
         Table('qoe_rollups', ('dimension', 'value', 'window_start'),
               ('count', 'active_sessions', 'plays',
                'video_start_time_p50_ms', 'video_start_time_p95_ms',
                'rebuffer_ms', 'playing_ms', 'rebuffering_ratio', 'errors',
                'failures', 'exits_before_video_start'))), 'alerts',
        # The session walk takes a report behind the watermark only in part
        # (rollups.late_reports, docs/video_qoe.md), so the read's lag
        # covers the stream's stragglers (20 s to 6 min late): no report
        # falls behind it, killed or not (see LAG_COVERS).
        params=f'&watermark_lag={VIDEO_LAG_SECONDS}s'),
}


def _same(a, b) -> bool:
    """Field values equal; floats up to their last bits (a stream sums a
    window's partials in another order than a replay)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or \
            math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def _differing(got, expected) -> list:
    """The windows whose final panes differ (or are in one side only)."""
    def same(a, b):
        return all(_same(x, y) for x, y in zip(a, b))
    return sorted((w for w in got.keys() | expected.keys()
                   if w not in got or w not in expected or
                   not same(got[w], expected[w])), key=repr)


def _furthest_behind(records) -> float:
    """How far (event-time seconds) a record comes after a later one, at
    most, in the order the stream is delivered."""
    newest, behind = float('-inf'), 0.0
    for at, _ in records:
        behind = max(behind, newest - at)
        newest = max(newest, at)
    return behind


class _Arriving:
    """Delivers the stream in CHUNKS parts, one a second, from a thread:
    the first at once, the rest while the first runs go on."""

    def feed(self, records):
        size = -(-len(records) // CHUNKS)
        chunks = [records[i:i + size] for i in range(0, len(records), size)]

        def deliver():
            for i, chunk in enumerate(chunks):
                if i:
                    time.sleep(1.0)
                self.deliver(chunk)
        self._thread = threading.Thread(target=deliver, daemon=True)
        self._thread.start()

    def delivered(self):
        """Waits until the whole stream is delivered."""
        self._thread.join(120)
        assert not self._thread.is_alive()


class _Kafka(_Arriving):
    """The stream on a 4-partition topic, read by one group."""
    # (the trades and video_qoe jobs commit nothing before their read ends)
    PROGRESS_SECONDS = 6.0

    def __init__(self, request, name, params=''):
        self.broker = request.getfixturevalue('kafka')
        topic = self.topic = fresh(self.broker)
        self.uri = f'kafka://{self.broker.brokers}/{topic}?group={name}' \
                   f'&stop=idle:2s{params}'
        self._commits = _Commits(self.broker, topic, name)

    def deliver(self, records):
        produce(self.broker, self.topic, records)

    def started(self):
        self._commits.start = self._commits.total()

    def wait(self, job, seconds):
        self._commits.watch(job, seconds)

    def until_progress(self, job, seconds):
        """Until the run has committed offsets of its own (or ended, or
        ``seconds`` passed)."""
        self._commits.watch(job, seconds, until_advance=True)

    def killed(self):
        self._commits.at_kills.append(self._commits.total())

    def close(self):
        self._commits.close()

    def __str__(self):
        return str(self._commits)


class _PubSub(_Arriving):
    """The stream published to a topic, read through one subscription."""
    # (a restart acknowledges nothing before the killed run's leases
    # expire, 11 s after it starts)
    PROGRESS_SECONDS = 30.0

    def __init__(self, request, name, params=''):
        self.emulator = request.getfixturevalue('pubsub')
        topic = self.topic = self.emulator.topic(name)
        # A restart waits for the killed run's leases to expire: the ack
        # deadline, at least the lease the read keeps.
        self.subscription = self.emulator.subscription(
            topic, f'{name}-in',
            ack_deadline_seconds=_pubsub_acks.LEASE_SECONDS)
        self.uri = f'pubsub://{self.subscription}?stop=idle:2s{params}'
        self.sink = None
        self._before = None
        self.partial = 0         # kills after part of it was acknowledged

    def deliver(self, records):
        _publish(self.topic, [payload for _, payload in records])

    def state(self):
        return _pubsub_acks.state_path(str(self.sink), self.subscription)

    def started(self):
        self._before = _text(self.state())

    def wait(self, job, seconds):
        deadline = time.monotonic() + seconds
        while job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def until_progress(self, job, seconds):
        """Until the run's state lists acknowledged messages (or it
        ended, or ``seconds`` passed)."""
        _until_acknowledging(job, self.state(), self._before, seconds)

    def killed(self):
        self.partial += _acknowledged(self.sink, self.subscription)

    def close(self):
        pass

    def __str__(self):
        return f'{self.partial} kills after acknowledging part of the stream'


@pytest.mark.parametrize('source_kind', ['kafka', 'pubsub'])
@pytest.mark.parametrize('name', list(JOBS))
def test_killed_and_restarted_the_final_panes_equal_a_replay(
        tmp_path, request, name, source_kind):
    job = JOBS[name]
    records = list(synthetic.generate(
        transforms_io.parse_uri(job.stream)).records())
    sink = tmp_path / 'out'
    label = f'kills-{name.replace("_", "-")}-{source_kind}'
    if job.params:
        # LAG_COVERS: the lag leaves no record behind the watermark.
        assert _furthest_behind(records) < VIDEO_LAG_SECONDS - 5
    source = (_Kafka if source_kind == 'kafka' else _PubSub)(
        request, label, job.params)
    source.sink = sink
    argv = _job(source.uri, sink, True,
                job=_compared(job.module, job.tables[0]))
    env = {**os.environ, 'PYTHONPATH': REPO}
    seed = int(os.environ.get('SEED') or random.randrange(10**6))
    moments = random.Random(seed)
    kills = ended = 0
    source.feed(records)
    for attempt in range(KILLS):
        source.started()
        run = subprocess.Popen(argv, cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        if attempt % 2:
            # Once this run has committed or acknowledged records of its
            # own, a moment later: the restart resumes mid-stream.  Some
            # commit or acknowledge nothing before their read ends (see
            # docs/reliability.md): after PROGRESS_SECONDS, any moment.
            source.until_progress(run, source.PROGRESS_SECONDS)
            time.sleep(moments.uniform(0.0, 0.5))
        else:
            # A moment inside the run (a first run lasts as long as the
            # stream arrives, CHUNKS - 1 seconds, and stop=idle:2s after
            # it; a restart a start-up of 1.5 s or more, the read, and the
            # same).
            source.wait(run, moments.uniform(1.5, 4.5))
            ended += run.poll() is not None
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            run.wait()
            kills += 1
            source.killed()
        run.wait()
    source.delivered()
    last = subprocess.run(argv, cwd=REPO, env=env, capture_output=True,
                          timeout=300, check=False)
    source.close()
    assert last.returncode == 0, last.stderr.decode()[-2000:]

    first = job.tables[0]
    (got, expected, oracle, lost, twice, late, decode_dead, dead_missing,
     dead_twice) = _against_replay(sink, records, tmp_path,
                                   job=_compared(job.module, first))
    panes = {first.name: (got, expected)}
    for table in job.tables[1:]:
        compared = _compared(job.module, table)
        panes[table.name] = (_final_panes(sink, compared),
                             _final_panes(tmp_path / 'replay', compared))
    differing = {t: _differing(*pair) for t, pair in panes.items()}
    print(f'\n{name} kill test ({source_kind}, seed {seed}): {kills} kills '
          f'({ended} timed moments found the run ended; {source}), '
          f'{len(records)} records, windows '
          f'{ {t: len(e) for t, (_, e) in panes.items()} }; lost {lost}, '
          f'counted twice {twice}; windows differing '
          f'{ {t: len(d) for t, d in differing.items()} }; dead letters '
          f'{decode_dead} (replay {oracle["dead_lettered"]}; missing '
          f'{sum(dead_missing.values())}, twice '
          f'{sum(dead_twice.values())}), late {late}; {job.unchecked} '
          f'{_rows_of(sink, job.unchecked)} (replay '
          f'{_rows_of(tmp_path / "replay", job.unchecked)}; not compared)')
    for table, found in differing.items():
        for window in found[:5]:
            print(f'  {table} {window}: got {panes[table][0].get(window)}, '
                  f'replay {panes[table][1].get(window)}')
    assert kills >= min(1, KILLS)
    assert lost == 0 and twice == 0
    assert not any(differing.values())
    assert late == 0
    # Dead letters exactly once: the replay's, payload by payload.
    assert not dead_missing and not dead_twice
    assert decode_dead == oracle['dead_lettered']
    if source_kind == 'pubsub':
        # The last run ended: everything acknowledged.
        assert '"ended":true' in _text(source.state())


def _rows_of(directory, table) -> int:
    rows = _rows(directory, table)
    return 0 if rows is None else len(rows)
