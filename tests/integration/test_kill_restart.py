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
import datetime
import glob
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import typing

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipelines import logs, run
from transforms import privacy
from transforms import io as transforms_io
from transforms.aggregate import LATE_STAGE
from transforms.decode import decode_payload
from transforms.io import synthetic
from transforms.logs import decoders
from transforms.logs.records import is_error

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
                     first_argv=None, late_letters=False, before_last=None):
    """Runs the job ``argv`` (reading ``topic`` as ``group``) KILLS times,
    each killed with SIGKILL: every other run once it has committed offsets
    of its own, or ``commit_wait`` seconds (a random moment in that range)
    after its start if that comes first (a kill that finds the run ended is
    not counted), the others at a random moment ``first_moments`` (seconds)
    after its start; then once more, to its end (which must succeed).
    ``first_argv``: the first run's command instead, killed once it has
    committed offsets of its own (within 120 s).  ``late_letters``: every
    other kill waits also until the run has written late dead letters of
    its own (in ``tmp_path/out``), and the late letters in the sink at each
    kill are listed in ``commits.late_at_kills``.  ``before_last``: called
    before the last run (e.g. until the stream is whole).
    Returns (kills, the seed of the moments, the group's commits as
    watched)."""
    env = {**os.environ, 'PYTHONPATH': REPO}
    seed = int(os.environ.get('SEED') or random.randrange(10**6))
    moments = random.Random(seed)
    kills = 0
    commits = _Commits(kafka, topic, group)
    commits.late_at_kills = []
    sink = tmp_path / 'out'
    for attempt in range(KILLS):
        commits.start = commits.total()
        started = time.time()
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
            if late_letters:
                # once it has also written late dead letters of its own, a
                # moment later
                until_late_letters(job, sink, started)
                time.sleep(moments.uniform(0.0, 1.0))
                committed = commits.total()
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
            if late_letters:
                commits.late_at_kills.append(late_letters_in(sink))
        job.wait()
    if before_last is not None:
        before_last()
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


# The 'disordered' cases: every EVERY-th record the job can date is moved
# SHIFT seconds back in event time (its payload's time, and its Kafka
# timestamp), staying in its place in the stream: far beyond the allowed
# lateness (1 h) of windows the watermark has passed.
EVERY = 40


SHIFT = 7200


_RFC3339 = re.compile(rb'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z')


_CLF = re.compile(rb'\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d) \+0000\]')


def _back(payload: bytes, seconds: int) -> bytes:
    """``payload`` (a line of the synthetic log stream: JSON, syslog or
    access log) with its time ``seconds`` earlier."""
    found = _RFC3339.search(payload)
    if found:
        text = found.group().decode()
        stamp = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
        moved = (stamp - datetime.timedelta(seconds=seconds)).isoformat(
            timespec='milliseconds').replace('+00:00', 'Z')
        return payload[:found.start()] + moved.encode() + \
            payload[found.end():]
    found = _CLF.search(payload)
    if found:
        stamp = datetime.datetime.strptime(found.group(1).decode(),
                                           '%d/%b/%Y:%H:%M:%S')
        moved = (stamp - datetime.timedelta(seconds=seconds)).strftime(
            '%d/%b/%Y:%H:%M:%S')
        return payload[:found.start(1)] + moved.encode() + \
            payload[found.end(1):]
    return payload


def disordered(records):
    """``records`` with every EVERY-th one the job can date moved SHIFT
    seconds back in event time, in its place: (the stream, the indexes
    moved)."""
    decoder = decoders.make_decoder('auto')
    stream, moved = list(records), []
    for i in range(EVERY, len(records), EVERY):
        t, payload = records[i]
        before = decode_payload(payload, decoder, 'decode')
        if not hasattr(before, 'event_time'):
            continue                      # a record the job cannot date
        shifted = _back(payload, SHIFT)
        after = decode_payload(shifted, decoder, 'decode')
        assert after.event_time.micros == \
            before.event_time.micros - SHIFT * 10**6, (payload, shifted)
        stream[i] = (t - SHIFT, shifted)
        moved.append(i)
    return stream, moved


_LATE_REASON = re.compile(
    r"^(\d+) record\(s\) of '([^']*)' for window \[([^,]+), ([^)]+)\)")


def late_letters_in(sink, since=0.0) -> int:
    """The late dead letters in ``sink`` (in files written since the
    wall-clock time ``since``): what a killed run left, before the restart
    rolls back those written after its last commit."""
    total = 0
    for path in glob.glob(f'{sink}/dead_letter/**/*.parquet',
                          recursive=True):
        try:
            if os.stat(path).st_mtime < since:
                continue
            stages = pq.read_table(path, columns=['stage']).column('stage')
        except (OSError, pa.ArrowInvalid):
            continue          # rolled back, or not yet whole
        total += stages.to_pylist().count(LATE_STAGE)
    return total


def until_late_letters(job, sink, since, timeout=30):
    """Waits until the running ``job`` has written a late dead letter
    (since ``since``), it ended, or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while job.poll() is None and time.monotonic() < deadline and \
            not late_letters_in(sink, since):
        time.sleep(0.2)


def _same(got, expected) -> bool:
    """Two final panes' fields equal (a window without latencies has NaN
    for their minimum and maximum in both)."""
    return got is not None and len(got) == len(expected) and all(
        a == b or (pd.isna(a) and pd.isna(b)) for a, b in zip(got, expected))


def over_time(publish, records, chunks=20, every=0.75):
    """A thread that publishes ``records`` in ``chunks`` parts, one every
    ``every`` seconds (started; join it): a stream that arrives while the
    job runs, so that the watermark has passed the windows of the records
    moved back when they come (a backlog read at once is stamped with the
    watermark of its first poll, and nothing in it is late)."""
    size = -(-len(records) // chunks)

    def run_():
        for start in range(0, len(records), size):
            publish(records[start:start + size])
            time.sleep(every)
        thread.finished = time.monotonic()
    thread = threading.Thread(target=run_, daemon=True)
    thread.finished = None
    thread.start()
    return thread


def against_counts(sink, records, moved, tmp_path):
    """For a stream with late records: what the killed and restarted runs
    wrote to ``sink`` against a pandas count of the published ``records``
    (``moved``: the indexes of those moved back in event time), whatever
    split between windows and late dead letters the runs' timing made.
    Checks each late letter's form (one record, a window of 60 s) and that
    only moved records are late, each letter naming its own record's
    window; returns the figures by name: windows, records moved, late
    letters, late letters written twice (the same payload), late letters
    naming no record, records lost and counted twice (window by window,
    final count plus late letters against the pandas count: a moved record
    in neither its final pane nor a letter is lost), the windows whose
    final pane is not that of exactly their records without a late letter
    (count, errors, latency count, minimum and maximum, by pandas), decode
    dead letters and the replay's (with the payloads missing and written
    twice), and the windows no record was late for whose final pane
    differs from the replay's."""
    decoder = decoders.make_decoder('auto')
    masker = privacy.Masker(mode='mask')      # the job's default, --mask

    def masked(payload):
        return masker.mask(payload.decode('utf-8', 'surrogateescape')).encode(
            'utf-8', 'surrogateescape')
    # The oracle: each record's service and window (event time from its
    # payload, fixed windows of 60 s), counted with pandas; the payloads
    # of the moved records as the dead letters hold them (masked).
    rows = []
    for i, (_, payload) in enumerate(records):
        record = decode_payload(payload, decoder, 'decode')
        if hasattr(record, 'event_time'):
            rows.append((record.service, record.event_time.micros // 10**6,
                         i in moved, masked(payload),
                         is_error(record), record.latency_ms))
    frame = pd.DataFrame(rows, columns=['service', 'time', 'moved', 'raw',
                                        'error', 'latency'])
    frame['window'] = frame.time // 60 * 60
    in_window = frame.groupby(['service', 'window']).size()
    moved_windows = {raw: (service, window) for service, window, raw in
                     frame[frame.moved][['service', 'window', 'raw']]
                     .itertuples(index=False)}

    stats = _rows(sink, 'service_stats')
    final = stats.sort_values('pane_index').groupby(
        ['service', 'window_start']).tail(1)
    panes = {(r.service, int(r.window_start.timestamp())):
             tuple(getattr(r, f) for f in FIELDS)
             for r in final.itertuples(index=False)}
    dead = _rows(sink, 'dead_letter')
    late = dead[dead.stage == LATE_STAGE]
    late_windows = collections.Counter()
    for raw, reason in zip(late.raw, late.reason):
        found = _LATE_REASON.match(reason)
        assert found, reason
        assert found.group(1) == '1', reason      # one letter per record
        start = int(pd.Timestamp(found.group(3)).timestamp())
        assert int(pd.Timestamp(found.group(4)).timestamp()) == start + 60
        # Only a moved record can be late (the others are at most 6 min
        # late, the allowed lateness 1 h), and its letter names its window.
        assert moved_windows.get(raw) == (found.group(2), start), reason
        late_windows[(found.group(2), start)] += 1
    letters = collections.Counter(late.raw)
    late_twice = sum(n - 1 for n in letters.values() if n > 1)

    lost = twice = 0
    for window in set(in_window.index) | set(panes) | set(late_windows):
        have = panes.get(window, (0,))[0] + late_windows.get(window, 0)
        want = int(in_window.get(window, 0))
        lost += max(0, want - have)
        twice += max(0, have - want)
    # Each final pane holds exactly its window's records but those with a
    # late letter: its count, errors and latencies (count, minimum,
    # maximum) against pandas over those records.
    kept = frame[~(frame.moved & frame.raw.isin(set(letters)))]
    wanted = kept.groupby(['service', 'window']).agg(
        count=('raw', 'size'), errors=('error', 'sum'),
        latency_count=('latency', 'count'), latency_min=('latency', 'min'),
        latency_max=('latency', 'max'))
    wanted = {w: tuple(row) for w, row in zip(
        wanted.index, wanted.itertuples(index=False))}
    panes_differ = [w for w in set(wanted) | set(panes)
                    if w not in wanted or
                    not _same(panes.get(w), wanted[w])]
    for w in sorted(panes_differ)[:5]:
        print('final pane differs from pandas:', w, panes.get(w),
              wanted.get(w))
    # A late letter names its record (``URI#partition=P&offset=O``,
    # ``URI#message=ID``), so that a restart does not write it again.
    unnamed = int((~late.source.str.contains('#', regex=False)).sum())

    # Decode dead letters: the replay's, payload by payload; and the final
    # panes of the windows no record was kept out of as late equal the
    # replay's, field by field.
    (got, expected, oracle, _, _, _, decode_dead, dead_missing,
     dead_twice) = _against_replay(sink, records, tmp_path)
    differ = [w for w in expected
              if (w[0], int(w[1].timestamp())) not in late_windows
              and not _same(got.get(w), expected[w])]
    for w in sorted(differ)[:5]:
        print('final pane differs from the replay\'s:', w, got.get(w),
              expected[w], int(in_window.get((w[0], int(w[1].timestamp())),
                                             0)))
    return dict(windows=len(in_window), moved=len(moved),
                late_letters=len(late), late_twice=late_twice,
                late_unnamed=unnamed,
                lost=lost, twice=twice, decode_dead=decode_dead,
                panes_differ=len(panes_differ),
                replay_dead=oracle['dead_lettered'],
                dead_missing=sum(dead_missing.values()),
                dead_twice=sum(dead_twice.values()), differ=len(differ))


@pytest.fixture
def cpu_load():
    """A CPU-bound process beside the job (stopped by its id)."""
    hog = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


@pytest.mark.parametrize('streaming,loaded,published_now,window,late', [
    (True, False, False, None, False), (True, True, False, None, False),
    (False, False, False, None, False), (True, False, True, None, False),
    (True, False, False, 'sliding:2m/1m', False),
    (True, False, False, None, True)],
    ids=['streaming', 'streaming-loaded', 'bounded', 'published-now',
         'streaming-sliding', 'disordered'])
def test_killed_and_restarted_the_final_panes_equal_a_replay(
        kafka, tmp_path, request, streaming, loaded, published_now, window,
        late):
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
    moved = []
    if late:
        # Every 40th record two hours back in event time, in its place in
        # the topic (its Kafka timestamp moved too, as the publisher does).
        records, moved = disordered(records)
    topic = fresh(kafka)
    producer = None
    if published_now:
        # A file replay published now: the record timestamps say today,
        # the payloads 2026-01-01.
        now = time.time()
        produce(kafka, topic, [(now + i / 1000.0, payload)
                               for i, (_, payload) in enumerate(records)])
    elif late:
        # (while the runs go on)
        producer = over_time(lambda part: produce(kafka, topic, part),
                             records)
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
    kills, seed, commits = kill_and_restart(
        kafka, topic, argv, tmp_path, first_argv=first, late_letters=late,
        before_last=producer.join if producer is not None else None)
    if late:
        figures = against_counts(sink, records, moved, tmp_path)
        print(f'\nkill test ({request.node.callspec.id}, seed {seed}): '
              f'{kills} kills, {len(records)} records ({len(moved)} moved '
              f'{SHIFT} s back), {figures}; late letters in the sink at '
              f'the kills {commits.late_at_kills}; {commits}')
        assert kills >= 1
        # (late letters written: kept, or rolled back with a killed run's
        # files and the record read again in its window by a restart)
        assert max(commits.late_at_kills + [figures['late_letters']]) > 0
        assert figures['lost'] == 0 and figures['twice'] == 0
        assert figures['late_twice'] == 0 and figures['late_unnamed'] == 0
        assert figures['differ'] == 0 and figures['panes_differ'] == 0
        assert not figures['dead_missing'] and not figures['dead_twice']
        assert figures['decode_dead'] == figures['replay_dead']
        return
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
