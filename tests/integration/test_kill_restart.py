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


class Table(typing.NamedTuple):
    """A windowed output table compared with the replay's: its name, the
    columns naming a window of it, and the fields compared (the first one
    counts the records in the window)."""
    name: str
    keys: tuple
    fields: tuple


SERVICE_STATS = Table('service_stats', ('service', 'window_start'),
                      tuple(FIELDS))


def _job(source, sink, streaming, job='logs'):
    argv = [sys.executable, '-m', 'pipelines', job, '--source', source,
            '--sink', f'parquet://{sink}', '--trigger',
            'late=1,lateness=1h,accumulating', '--no-summary']
    return argv + (['--streaming'] if streaming else [])


def _final_panes(directory, table=SERVICE_STATS):
    """(the table's keys: service, window start) -> the fields of its
    highest pane."""
    rows = _rows(directory, table.name)
    if rows is None:
        return {}
    final = rows.sort_values('pane_index', kind='stable').groupby(
        list(table.keys)).tail(1)
    return {tuple(getattr(r, k) for k in table.keys):
            tuple(getattr(r, f) for f in table.fields)
            for r in final.itertuples(index=False)}


def _rows(directory, table):
    try:
        return ds.dataset(f'{directory}/{table}').to_table().to_pandas()
    except FileNotFoundError:
        return None


def _against_replay(sink, records, tmp_path, job=logs, table=SERVICE_STATS):
    """What the killed and restarted runs of ``job`` wrote to ``sink``
    against a file replay of the same ``records`` (in ``tmp_path/replay``),
    compared on ``table``: (final panes got, final panes expected,
    the replay's summary, records lost, records counted twice, late dead
    letters, decode dead letters, dead letters' payloads missing and
    payloads written twice, each as a multiset against the replay's)."""
    replay = tmp_path / 'all.log'
    replay.write_bytes(b'\n'.join(p for _, p in records) + b'\n')
    oracle = run.run(job, ['--source', f'file://{replay}', '--sink',
                           f'parquet://{tmp_path}/replay', '--no-summary'])
    got = _final_panes(sink, table)
    expected = _final_panes(tmp_path / 'replay', table)
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


@pytest.fixture
def cpu_load():
    """A CPU-bound process beside the job (stopped by its id)."""
    hog = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


@pytest.mark.parametrize('streaming,loaded,published_now', [
    (True, False, False), (True, True, False), (False, False, False),
    (True, False, True)],
    ids=['streaming', 'streaming-loaded', 'bounded', 'published-now'])
def test_killed_and_restarted_the_final_panes_equal_a_replay(
        kafka, tmp_path, request, streaming, loaded, published_now):
    if loaded:
        request.getfixturevalue('cpu_load')
    # Two records a second: the stream spans hours, so that windows turn
    # final (end + 1h lateness) while it is read and offsets are committed
    # mid-run, before some of the kills.
    uri = transforms_io.parse_uri(
        f'synthetic://logs?events={EVENTS}&seed=11&rate=2')
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
    argv = _job(source, sink, streaming)
    env = {**os.environ, 'PYTHONPATH': REPO}
    seed = int(os.environ.get('SEED') or random.randrange(10**6))
    moments = random.Random(seed)
    kills = 0
    commits = _Commits(kafka, topic, 'kills')
    for attempt in range(KILLS):
        commits.start = commits.total()
        job = subprocess.Popen(argv, cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        if attempt % 2:
            # Once this run has committed offsets of its own (mid-run),
            # at once: the restart then resumes mid-stream.
            committed = commits.watch(job, 60, until_advance=True)
            time.sleep(moments.uniform(0.0, 0.3))
        else:
            # A run lasts at least 5.5 s (a start-up of 1.5 s or more, a
            # read of about a second, then stop=idle:4s while its windows
            # are processed): a moment before 4.5 s always finds it
            # running (later moments found fast runs ended, and no kill).
            committed = commits.watch(job, moments.uniform(1.5, 4.5))
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

    (got, expected, oracle, lost, twice, late, decode_dead, dead_missing,
     dead_twice) = _against_replay(sink, records, tmp_path)
    print(f'\nkill test ({request.node.callspec.id}, seed {seed}): {kills} '
          f'kills, {len(records)} records, {len(expected)} windows; lost '
          f'{lost}, counted twice {twice}; dead letters {decode_dead} '
          f'(replay {oracle["dead_lettered"]}; missing '
          f'{sum(dead_missing.values())}, twice {sum(dead_twice.values())})'
          f', late {late}; {commits}')
    assert kills >= 1
    assert lost == 0 and twice == 0
    assert got == expected
    assert late == 0
    # Dead letters exactly once too: the replay's, payload by payload.
    assert not dead_missing and not dead_twice
    assert decode_dead == oracle['dead_lettered']
