"""Crash safety of a Kafka job on the local runner: the job runs as a process,
is killed (SIGKILL) at random moments several times, and is started again
with the same consumer group into the same sink; the final pane of every
window must equal a file replay of the same records: nothing lost, nothing
counted twice.  On a loaded machine too (a CPU-bound process runs beside it),
and for a file replay published now (Kafka timestamps of today, payloads
dated 2026-01-01: the windows, the watermark and the commits follow the
payloads).

KILLS (environment, default 3) sets how many kills each case makes; the
random moments come from a seed printed with the figures (pytest -s; SEED
(environment) plays the same moments again)."""
import collections
import os
import typing
import random
import signal
import subprocess
import sys
import time
import typing

import pyarrow.dataset as ds
import pytest

from pipelines import logs, run
from transforms import io as transforms_io
from transforms.io import synthetic

from tests.integration.test_kafka import fresh, produce

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
EVENTS = 20000
KILLS = int(os.environ.get('KILLS', '3'))
FIELDS = ['count', 'errors', 'latency_count', 'latency_min_ms',
          'latency_max_ms']


class Job(typing.NamedTuple):
    """A job as the kill tests run it: its module, the windowed table whose
    final panes are compared with a replay, that table's key columns, the
    fields compared (the first: the records a pane holds) and options
    beyond the source, sink and trigger."""
    module: typing.Any
    table: str
    keys: tuple
    fields: tuple
    args: tuple = ()


LOGS = Job(logs, 'service_stats', ('service',), tuple(FIELDS))


def _job(source, sink, streaming, window=None, job=LOGS):
    argv = [sys.executable, '-m', 'pipelines', job.module.JOB,
            '--source', source, '--sink', f'parquet://{sink}', '--trigger',
            'late=1,lateness=1h,accumulating', '--no-summary', *job.args]
    return argv + (['--streaming'] if streaming else []) + \
        (['--window', window] if window else [])


def _final_panes(directory, job=LOGS):
    """(key..., window start) -> the fields of its highest pane."""
    table = _rows(directory, job.table)
    if table is None:
        return {}
    final = table.sort_values('pane_index').groupby(
        [*job.keys, 'window_start']).tail(1)
    return {tuple(getattr(r, k) for k in (*job.keys, 'window_start')):
            tuple(getattr(r, f) for f in job.fields)
            for r in final.itertuples(index=False)}


def _rows(directory, table):
    try:
        return ds.dataset(f'{directory}/{table}').to_table().to_pandas()
    except FileNotFoundError:
        return None


def _against_replay(sink, records, tmp_path, window=None, job=LOGS):
    """What the killed and restarted runs wrote to ``sink`` against a file
    replay of the same ``records``: (final panes got, final panes expected,
    the replay's summary, records lost, records counted twice, late dead
    letters, decode dead letters, dead letters' payloads missing and
    payloads written twice, each as a multiset against the replay's)."""
    replay = tmp_path / 'all.log'
    replay.write_bytes(b'\n'.join(p for _, p in records) + b'\n')
    oracle = run.run(job.module, [
        '--source', f'file://{replay}', '--sink',
        f'parquet://{tmp_path}/replay', '--no-summary', *job.args]
        + (['--window', window] if window else []))
    got = _final_panes(sink, job)
    expected = _final_panes(tmp_path / 'replay', job)
    lost = sum(expected[w][0] - got.get(w, (0,))[0] for w in expected
               if got.get(w, (0,))[0] < expected[w][0])
    twice = sum(got[w][0] - expected.get(w, (0,))[0] for w in got
                if got[w][0] > expected.get(w, (0,))[0])
    dead = _rows(sink, 'dead_letter')
    late = 0 if dead is None else int((dead.stage == 'window.late').sum())
    decode_dead = 0 if dead is None else len(dead) - late
    written = collections.Counter() if dead is None else collections.Counter(
        dead[dead.stage != 'window.late'].raw)
    replayed = _rows(tmp_path / 'replay', 'dead_letter')
    wanted = collections.Counter() if replayed is None else \
        collections.Counter(replayed.raw)
    assert sum(wanted.values()) == oracle['dead_lettered']
    return (got, expected, oracle, lost, twice, late, decode_dead,
            wanted - written, written - wanted)


class _Commits:
    """The group's committed offsets (summed over the partitions), looked
    at while a run goes on: how far commits advance before each kill."""

    def __init__(self, kafka, topic, group):
        import confluent_kafka
        self._consumer = confluent_kafka.Consumer({
            'bootstrap.servers': kafka.brokers, 'group.id': group,
            'enable.auto.commit': False})
        self._parts = [confluent_kafka.TopicPartition(topic, p)
                       for p in range(4)]
        self.at_kills = []        # committed when each kill came
        self.mid_run = 0          # commits seen while a run went on
        self.seen = []            # every committed total seen
        self.start = 0            # committed when the current run started

    def total(self):
        found = self._consumer.committed(self._parts, timeout=10)
        return sum(max(0, tp.offset) for tp in found)

    def watch(self, job, seconds, until_advance=False):
        """Waits ``seconds`` (or until ``job`` ends, or with
        ``until_advance`` until the run has committed), noting each
        advance."""
        last = self.total()
        deadline = time.monotonic() + seconds
        while job.poll() is None and time.monotonic() < deadline and \
                not (until_advance and last > self.start):
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            now = self.total()
            if now != last:
                self.mid_run += 1
                self.seen.append(now)
                last = now
        return last

    def close(self):
        self._consumer.close()

    def __str__(self):
        return (f'committed at the kills {self.at_kills}, '
                f'{self.mid_run} commit advances seen while runs went on '
                f'({self.seen})')


def kill_and_restart(kafka, topic, argv, tmp_path, group='kills',
                     first_moments=(1.5, 4.5), commit_wait=(60, 60),
                     first_argv=None):
    """Runs the job ``argv`` (reading ``topic`` as ``group``) KILLS times,
    each killed with SIGKILL: every other run once it has committed offsets
    of its own, or ``commit_wait`` seconds (a random moment in that range)
    after its start if that comes first (a kill that finds the run ended is
    not counted), the others at a random moment ``first_moments`` (seconds)
    after its start; then once more, to its end (which must succeed).
    ``first_argv``: the first run's command instead, killed once it has
    committed offsets of its own (within 120 s).
    Returns (kills, the seed of the moments, the group's commits as
    watched)."""
    env = {**os.environ, 'PYTHONPATH': REPO}
    seed = int(os.environ.get('SEED') or random.randrange(10**6))
    moments = random.Random(seed)
    kills = 0
    commits = _Commits(kafka, topic, group)
    for attempt in range(KILLS):
        commits.start = commits.total()
        never = first_argv is not None and not attempt
        job = subprocess.Popen(first_argv if never else argv, cwd=REPO,
                               env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        if never:
            committed = commits.watch(job, 120, until_advance=True)
            time.sleep(moments.uniform(0.0, 0.3))
        elif attempt % 2:
            # Once this run has committed offsets of its own (mid-run),
            # at once: the restart then resumes mid-stream.
            committed = commits.watch(job, moments.uniform(*commit_wait),
                                      until_advance=True)
            time.sleep(moments.uniform(0.0, 0.3))
        else:
            # A run lasts at least 5.5 s (a start-up of 1.5 s or more, a
            # read of about a second, then stop=idle:4s while its windows
            # are processed): a moment before 4.5 s always finds it
            # running (later moments found fast runs ended, and no kill).
            committed = commits.watch(job,
                                      moments.uniform(*first_moments))
        if job.poll() is None:
            job.send_signal(signal.SIGKILL)
            kills += 1
            commits.at_kills.append(committed)
        job.wait()
    # The last run, watched to its end: how far it commits before it ends.
    with open(tmp_path / 'last.err', 'wb') as err:
        job = subprocess.Popen(argv, cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=err)
        commits.watch(job, 400)
        job.wait(timeout=400)
    last = subprocess.CompletedProcess(argv, job.returncode, b'',
                                       (tmp_path / 'last.err').read_bytes())
    commits.close()
    assert last.returncode == 0, last.stderr.decode()[-2000:]
    return kills, seed, commits


@pytest.fixture
def cpu_load():
    """A CPU-bound process beside the job (stopped by its id)."""
    hog = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


@pytest.mark.parametrize('streaming,loaded,published_now,window', [
    (True, False, False, None), (True, True, False, None),
    (False, False, False, None), (True, False, True, None),
    (True, False, False, 'sliding:2m/1m')],
    ids=['streaming', 'streaming-loaded', 'bounded', 'published-now',
         'streaming-sliding'])
def test_killed_and_restarted_the_final_panes_equal_a_replay(
        kafka, tmp_path, request, streaming, loaded, published_now, window):
    """(sliding: each record is in two windows, the first closing a
    period before the second; a restart reads again records of which one
    window may be final: none may be a late dead letter and in that final
    pane, and none may be lost from it: the restart keeps such a record
    out of that window alone.  Commits move on while a run reads (a
    horizon held before the first window of every record not yet final
    committed nothing before the read ended).  Half the records, the case
    being slower.)"""
    if loaded:
        request.getfixturevalue('cpu_load')
    # Two records a second: the stream spans hours, so that windows turn
    # final (end + 1h lateness) while it is read and offsets are committed
    # mid-run, before some of the kills.
    events = EVENTS // 2 if window else EVENTS
    uri = transforms_io.parse_uri(
        f'synthetic://logs?events={events}&seed=11&rate=2')
    records = list(synthetic.generate(uri).records())
    topic = fresh(kafka)
    if published_now:
        # A file replay published now: the record timestamps say today,
        # the payloads 2026-01-01.
        now = time.time()
        produce(kafka, topic, [(now + i / 1000.0, payload)
                               for i, (_, payload) in enumerate(records)])
    else:
        produce(kafka, topic, records)
    sink = tmp_path / 'out'
    source = f'kafka://{kafka.brokers}/{topic}?group=kills&stop=idle:4s'
    argv = _job(source, sink, streaming, window)
    # (sliding) The first run reads without end (stop=never) until it
    # commits: the runner's horizon lags a backlog read, and a run that
    # stops once idle may end before it passed a window.  Its commits are
    # then mid-run, and the restart resumes a horizon past windows of
    # records it reads again.
    first = _job(source.replace('stop=idle:4s', 'stop=never'), sink,
                 streaming, window) if window else None
    kills, seed, commits = kill_and_restart(kafka, topic, argv, tmp_path,
                                            first_argv=first)
    (got, expected, oracle, lost, twice, late, decode_dead, dead_missing,
     dead_twice) = _against_replay(sink, records, tmp_path, window)
    print(f'\nkill test ({request.node.callspec.id}, seed {seed}): {kills} '
          f'kills, {len(records)} records, {len(expected)} windows; lost '
          f'{lost}, counted twice {twice}; dead letters {decode_dead} '
          f'(replay {oracle["dead_lettered"]}; missing '
          f'{sum(dead_missing.values())}, twice {sum(dead_twice.values())})'
          f', late {late}; {commits}')
    assert kills >= 1
    if window:
        # Offsets committed while the stream was read, before its end (a
        # run that ends commits every offset: len(records)).
        assert any(0 < seen < len(records) for seen in commits.seen), \
            str(commits)
    assert lost == 0 and twice == 0
    assert got == expected
    assert late == 0
    # Dead letters exactly once too: the replay's, payload by payload.
    assert not dead_missing and not dead_twice
    assert decode_dead == oracle['dead_lettered']
