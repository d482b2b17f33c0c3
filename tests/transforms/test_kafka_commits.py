"""Which offsets a local Kafka read may commit (transforms/io/_kafka_commits.py)
and what a restart removes from a file sink (_windowed_files.roll_back),
without a broker: the commits are captured."""
import os
import time

import pytest

from transforms import windows
from transforms.io import _kafka_commits, _windowed_files
from transforms.io.kafka import PartitionSpec, StartSpec, StopSpec

T0 = 1767225600.0          # 2026-01-01T00:00:00Z
FINAL_AT = windows.FinalAt((windows.parse_window('fixed:60s'),), 30.0)


@pytest.fixture
def ledger():
    _kafka_commits.forget()
    spec = PartitionSpec('b:1', 't', 0, 'g', StartSpec('committed'),
                         StopSpec('never'), 5.0, ())
    commits = []
    _kafka_commits.track(spec, FINAL_AT, commits.append)
    yield spec, commits
    _kafka_commits.forget()


def test_final_at_is_the_windows_end_plus_the_lateness():
    assert FINAL_AT(T0) == FINAL_AT(T0 + 59.999) == T0 + 60 + 30
    assert FINAL_AT(T0 + 60) == T0 + 150
    sliding = windows.FinalAt((windows.parse_window('sliding:5m/1m'),), 0)
    assert sliding(T0 + 30) == T0 + 300       # the last window starts at T0
    assert windows.FinalAt((windows.parse_window('session:5m'),), 0)(T0) \
        == float('inf')


def test_each_window_is_final_by_the_lateness_of_its_grouping():
    """A job's WINDOW_LATENESS (trades: anomaly windows, judged with no
    allowed lateness): a record at T0 + 70 is in the bar [T0+60, T0+120)
    and the anomaly window [T0, T0+300); by the job's hour of lateness for
    both it is final at T0 + 3900, by none for the anomaly window at
    T0 + 3720 (its bar's close); with 10 s of lateness, at T0 + 300 (its
    anomaly window's end)."""
    from pipelines import options, run, trades
    specs = (windows.parse_window('fixed:60s'),
             windows.parse_window('fixed:5m'))
    assert windows.FinalAt(specs, 3600.0)(T0 + 70) == T0 + 300 + 3600
    own = windows.FinalAt(specs, 3600.0, (None, 0.0))
    assert own(T0 + 70) == T0 + 120 + 3600
    tight = windows.FinalAt(specs, 10.0, (None, 0.0))
    assert tight(T0 + 70) == T0 + 300
    assert own.least_lateness == tight.least_lateness == 0.0
    assert own.lateness == 3600.0         # the job's, for the roll-back
    args, _ = options.parse(trades.OPTIONS, [
        '--window', 'fixed:60s', '--anomaly_window', 'fixed:5m',
        '--trigger', 'late=1,lateness=2m'])
    assert run._final_at(args, trades) == windows.FinalAt(
        specs, 120.0, (None, 0.0))
    assert run._final_at(args) == windows.FinalAt(specs, 120.0, (None, None))


def test_an_offset_is_committed_once_every_record_before_it_is_final(ledger):
    spec, commits = ledger
    _kafka_commits.started(spec, 0, 100)
    _kafka_commits.emitted(spec, 0, 110, T0 + 10)     # window [T0, T0+60)
    _kafka_commits.emitted(spec, 0, 120, T0 + 70)     # window [T0+60, ...)
    _handed_over()
    _kafka_commits.release(T0 + 89)                   # nothing final yet
    (offsets,) = commits[-1:]
    assert [(p, o) for p, o, _ in offsets] == [(0, 100)]
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _kafka_commits.release(T0 + 90)                   # the first window is
    partition, offset, meta = commits[-1][0]
    assert (partition, offset) == (0, 110)
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert resume.horizon == T0 + 90 and resume.read == 120
    assert resume.processed == 120
    assert not resume.complete
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _kafka_commits.release(float('inf'))              # the run ended
    partition, offset, meta = commits[-1][0]
    assert offset == 120
    assert _kafka_commits.Resume.parse(offset, meta).complete


def test_a_late_record_keeps_the_commit_behind_the_latest_window(ledger):
    # "Final at" only grows along a partition: a late record read after a
    # newer one does not let the commit pass the newer one.
    spec, commits = ledger
    _kafka_commits.started(spec, 0, 0)
    _kafka_commits.emitted(spec, 0, 5, T0 + 70)
    _kafka_commits.emitted(spec, 0, 6, T0 + 1)        # late
    _handed_over()
    _kafka_commits.release(T0 + 90)
    assert commits[-1][0][1] == 0


def _handed_over():
    """The runner committed the reads' bundles, then looks for final
    records."""
    _kafka_commits.read_committed()
    _kafka_commits.prepare()


def test_a_commit_waits_for_what_the_read_emitted_and_its_hand_over(ledger):
    # Final windows are not enough: a record whose read's output is not yet
    # handed over, or whose output (a dead letter, say) may still be
    # pending downstream, is not committed, nor counted as read before the
    # commit.  Commits no longer wait until nothing at all is pending.
    spec, commits = ledger
    _kafka_commits.started(spec, 0, 0)
    _kafka_commits.emitted(spec, 0, 10, T0 + 10, stamped=T0)
    _kafka_commits.emitted(spec, 0, 20, T0 + 20, stamped=T0 + 5)
    _kafka_commits.prepare()                          # not handed over yet
    _kafka_commits.release(T0 + 90, T0 + 100)
    assert [o for _, o, _ in commits[-1]] == [0]
    _kafka_commits.read_committed()
    _kafka_commits.emitted(spec, 0, 30, T0 + 30, stamped=T0 + 6)
    _kafka_commits.prepare()                          # 30: not handed over
    time.sleep(_kafka_commits.MIN_INTERVAL)
    # Something stamped T0+3 is pending: only the first read's output is
    # surely written.
    _kafka_commits.release(T0 + 90, T0 + 3)
    _, offset, meta = commits[-1][0]
    assert offset == 10
    resume = _kafka_commits.Resume.parse(offset, meta)
    # read before the look: 30 was not handed over (see
    # test_a_late_record_whose_read_was_not_handed_over_is_read_again)
    assert (resume.read, resume.processed) == (20, 10)
    _handed_over()
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _kafka_commits.release(T0 + 90, T0 + 50)         # pending, but later
    _, offset, meta = commits[-1][0]
    assert offset == 30
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert (resume.read, resume.processed) == (30, 30)


def test_a_dead_letter_names_the_registered_message_it_came_from(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transforms import deadletter
    _kafka_commits.forget()
    deadletter.register_origin(b'bad', 'message=1')
    deadletter.register_origin(b'bad', 'message=2')
    deadletter.register_origin(b'acked', 'message=3')
    deadletter.forget_origins([(b'acked', 'message=3')])
    made = [deadletter.dead_letter(raw, 'decode', 'why', 'pubsub://s')
            for raw in (b'bad', b'other', b'acked', b'bad', b'bad')]
    assert [d.source for d in made] == [
        'pubsub://s#message=1', 'pubsub://s', 'pubsub://s',
        'pubsub://s#message=2', 'pubsub://s']
    folder = tmp_path / 'dead_letter' / 'unwindowed'
    folder.mkdir(parents=True)
    pq.write_table(pa.table({'source': [d.source for d in made[:2]]}),
                   folder / 'a.parquet')
    (folder / 'b.jsonl').write_text(
        '{"source": "pubsub://s#message=2"}\n'
        '{"source": "pubsub://other#message=9"}\n')
    assert deadletter.origins_written(str(tmp_path), 'pubsub://s') == {
        'message=1', 'message=2'}
    _kafka_commits.forget()                # a new run forgets them
    assert deadletter.dead_letter(b'bad', 'decode', 'why', 'pubsub://s') \
        .source == 'pubsub://s'


def test_garbage_metadata_is_no_resume():
    assert _kafka_commits.Resume.parse(5, '') is None
    assert _kafka_commits.Resume.parse(5, 'not json') is None
    assert _kafka_commits.Resume.parse(5, '{"h": 1}') is None


def _file(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'x')
    os.utime(path, (mtime, mtime))


def test_roll_back_removes_what_was_written_after_the_commit(tmp_path):
    committed_at = time.time() - 100
    before, after = committed_at - 10, committed_at + 10
    final = tmp_path / 'stats/20260101T000000Z_20260101T000100Z/a.parquet'
    open_ = tmp_path / 'stats/20260101T000100Z_20260101T000200Z/b.parquet'
    written_after = tmp_path / 'stats/20260101T000000Z_20260101T000100Z/c.parquet'
    dead_before = tmp_path / 'dead_letter/unwindowed/d.parquet'
    dead_after = tmp_path / 'dead_letter/unwindowed/e.parquet'
    late_before = tmp_path / 'dead_letter/20260101T000100Z_20260101T000200Z/f.parquet'
    for path, mtime in ((final, before), (open_, before),
                        (written_after, after), (dead_before, before),
                        (dead_after, after), (late_before, before)):
        _file(path, mtime)
    # Windows closing by T0+90 (end + 30 s of lateness) were final.
    removed = _windowed_files.roll_back(tmp_path, T0 + 90, committed_at, 30)
    assert removed == 3
    assert final.exists() and dead_before.exists() and late_before.exists()
    assert not open_.exists() and not written_after.exists() and \
        not dead_after.exists()


def test_a_commit_may_stop_inside_a_read_at_its_steps(ledger):
    # A read that takes a partition's whole backlog tells where it stood
    # on the way: the commit moves past the records that are final.
    spec, commits = ledger
    _kafka_commits.started(spec, 0, 0)
    _kafka_commits.emitted(spec, 0, 3000, T0 + 500, stamped=T0,
                           steps=[(1000, T0 + 10), (2000, T0 + 70)])
    _handed_over()
    _kafka_commits.release(T0 + 90, T0 + 100)
    _, offset, meta = commits[-1][0]
    assert offset == 1000
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert (resume.read, resume.processed) == (3000, 3000)


# A record too late for its window (window.late) across a kill.  Its
# dead letter, its only output, is written after the commit's look, so the
# commit does not cover it: after a kill the restart removes it with the
# files written after the commit, and must read the record again.


def _read_again(resume, records):
    return [o for o, t in records
            if not resume.already_counted(o, t, FINAL_AT)]


def test_a_late_record_whose_read_was_not_handed_over_is_read_again(ledger):
    spec, commits = ledger
    _kafka_commits.started(spec, 0, 0)
    # records 0-9, window [T0+60, T0+120): final at T0+150
    _kafka_commits.emitted(spec, 0, 10, T0 + 70, stamped=T0 + 40)
    _handed_over()
    # record 10 dated T0+1 (window [T0, T0+60), final at T0+90), read when
    # the watermark is at T0+95: late.  Its read is not handed over when
    # the runner looks; nothing else is pending.
    _kafka_commits.emitted(spec, 0, 11, T0 + 1, stamped=T0 + 95)
    _kafka_commits.prepare()
    _kafka_commits.release(T0 + 100, None)
    _, offset, meta = commits[-1][0]
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert offset == 0 and resume.horizon == T0 + 100
    assert FINAL_AT(T0 + 1) <= resume.horizon   # late on restart too
    # The oracle: the restart reads again exactly the records whose output
    # is not in the sink after the roll-back: 0-9 (their window is not
    # final) and 10 (its dead letter was not written before the commit).
    # Before, the commit's read position counted 10 as read, and the
    # restart skipped it as in a final pane: lost.
    assert _read_again(resume, [*((o, T0 + 70) for o in range(10)),
                                (10, T0 + 1)]) == list(range(11))


def test_a_late_record_pending_before_its_decode_is_read_again(ledger):
    spec, commits = ledger
    _kafka_commits.started(spec, 0, 0)
    _kafka_commits.emitted(spec, 0, 10, T0 + 70, stamped=T0 + 40)
    # record 10 as above, but handed over: pending, stamped T0+95 (the
    # watermark it was read under) until decoded, so the horizon may be
    # T0+95, past its window's T0+90.  The read registers it as a record
    # that may be late (its windows final under that watermark).
    _kafka_commits.emitted(spec, 0, 11, T0 + 1, stamped=T0 + 95,
                           late=[(10, FINAL_AT(T0 + 1), T0 + 95, b'late')])
    _handed_over()
    _kafka_commits.release(T0 + 95, T0 + 95)
    _, offset, meta = commits[-1][0]
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert (offset, resume.processed) == (0, 10)
    # Late, or in its window (which the restart then cannot tell): the
    # horizon committed stops before its window closes, so the restart
    # rolls that window back and reads it again, record 10 with it.
    # Before, the commit carried T0+95, and the restart skipped record 10
    # as in a final pane though its window.late dead letter was not
    # written: lost.
    assert T0 + 89 < resume.horizon < FINAL_AT(T0 + 1)
    assert _read_again(resume, [*((o, T0 + 70) for o in range(10)),
                                (10, T0 + 1)]) == list(range(11))
    # Once it is settled (nothing stamped at or before it pending: its
    # dead letter is written, or it is in its window's final pane), the
    # horizon moves on.
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _handed_over()
    _kafka_commits.release(T0 + 96, T0 + 100)
    _, offset, meta = commits[-1][0]
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert (resume.horizon, resume.read, resume.processed) == \
        (T0 + 96, 11, 11)
    assert _read_again(resume, [*((o, T0 + 70) for o in range(10)),
                                (10, T0 + 1)]) == list(range(10))


def test_a_late_record_past_a_committed_horizon_holds_the_commit(ledger):
    # A record read after a commit whose horizon is past its windows is
    # surely late: its window's final pane was written before it came, its
    # dead letter (its only output) maybe not yet.  A horizon cannot go
    # back (the windows final then were kept by the roll-back, their
    # records committed): nothing is committed until it is settled.
    spec, commits = ledger
    _kafka_commits.started(spec, 0, 0)
    _kafka_commits.emitted(spec, 0, 10, T0 + 10, stamped=T0)
    _handed_over()
    _kafka_commits.release(T0 + 95, None)
    assert [(o, _kafka_commits.Resume.parse(o, m).horizon)
            for _, o, m in commits[-1]] == [(10, T0 + 95)]
    _kafka_commits.emitted(spec, 0, 30, T0 + 70, stamped=T0 + 96,
                           late=[(20, FINAL_AT(T0 + 5), T0 + 96, b'x')])
    _handed_over()
    time.sleep(_kafka_commits.MIN_INTERVAL)
    count = len(commits)
    _kafka_commits.release(T0 + 100, T0 + 96)       # record 20 pending
    assert len(commits) == count
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _kafka_commits.release(T0 + 100, T0 + 200)      # settled
    _, offset, meta = commits[-1][0]
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert (offset, resume.horizon, resume.read) == (10, T0 + 100, 30)


def test_a_horizon_committed_never_goes_back(ledger):
    # The runner's horizon dips below windows already final while a late
    # record is pending (its timestamp is before them).  A commit carrying
    # that lower horizon after offsets moved under a higher one: the
    # restart rolled back windows whose records were committed, never read
    # again: lost.  The oracle: every record before the committed offset
    # is in a window final at the committed horizon.
    spec, commits = ledger
    _kafka_commits.started(spec, 0, 0)
    times = [T0 + 10] * 10 + [T0 + 70] * 10 + [T0 + 130] * 10
    _kafka_commits.emitted(spec, 0, 10, T0 + 10, stamped=T0)
    _kafka_commits.emitted(spec, 0, 20, T0 + 70, stamped=T0 + 1)
    _kafka_commits.emitted(spec, 0, 30, T0 + 130, stamped=T0 + 2)
    _handed_over()
    _kafka_commits.release(T0 + 100, None)          # committed: 10
    _kafka_commits.release(T0 + 160, None)          # 20, too soon to commit
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _kafka_commits.release(T0 + 95, None)           # a dip: committed now
    _, offset, meta = commits[-1][0]
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert offset == 20
    assert all(FINAL_AT(t) <= resume.horizon for t in times[:offset])


def test_a_restart_resumes_no_lower_than_the_commit_it_resumes(ledger):
    # Nor does the first commit of a restarted run carry a horizon below
    # the one it resumed (whose final windows it skipped).
    spec, commits = ledger
    _kafka_commits.started(spec, 0, 0, horizon=T0 + 150)
    # records 0-19 read again (after the old read position), late: their
    # windows final at the resumed horizon, the read's watermark
    _kafka_commits.emitted(spec, 0, 20, T0 + 70, stamped=T0 + 150, late=[
        (o, FINAL_AT(T0 + 70), T0 + 150, b'x') for o in range(20)])
    _handed_over()
    _kafka_commits.release(T0 + 20, None)
    _, offset, meta = commits[-1][0]
    assert (offset, _kafka_commits.Resume.parse(offset, meta).horizon) == \
        (20, T0 + 150)


class _Record:
    """A polled record: its value and offset (confluent_kafka.Message)."""

    def __init__(self, offset, value):
        self._offset, self._value = offset, value

    def offset(self):
        return self._offset

    def value(self):
        return self._value


def test_a_kafka_late_dead_letter_names_its_record(ledger, tmp_path):
    # The read registers the records of a poll that may be late (their
    # windows final under the watermark they are read under): a
    # window.late dead letter names its record, and a restart finds it in
    # the sink and does not read that record again.  Registrations of
    # records that turn out in their windows are forgotten once settled,
    # so that no other payload's dead letter takes them.  Before, a Kafka
    # record's late dead letter named nothing: written again after a kill.
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.transforms.window import IntervalWindow
    from transforms import aggregate, deadletter
    from transforms.io import kafka
    spec, _ = ledger
    source = 'kafka://b:1/t?group=g'
    records = [_Record(7, b'late'), _Record(8, b'on time'),
               _Record(9, b'in its window'), _Record(10, b'undated')]
    times = np.array([T0 + 1, T0 + 100, T0 + 2, np.nan])
    late = []
    mark = T0 + 95                  # windows of T0+1, T0+2 final then
    kafka._register_late(records, times, mark, FINAL_AT, 0, late)
    assert [(o, f, s, v) for o, f, s, v in late] == [
        (7, T0 + 90, mark, b'late'), (9, T0 + 90, mark, b'in its window')]
    _kafka_commits.started(spec, 0, 7)
    _kafka_commits.emitted(spec, 0, 11, T0 + 100, stamped=mark, late=late)
    split = aggregate._SplitLate('logs', lambda value: 1, 30.0,
                                 carries_raw=True, source=source)
    letters = [out.value for out in split.process(
        ('svc', windows.LateRecords([windows.WithRaw('v', b'late')], 5.0)),
        window=IntervalWindow(T0, T0 + 60))]
    assert [d.source for d in letters] == [f'{source}#partition=0&offset=7']
    # Record 9 was in its window: once settled, its registration is gone.
    _handed_over()
    _kafka_commits.release(T0 + 95, T0 + 200)
    assert deadletter.dead_letter(b'in its window', 'decode', 'why',
                                  source).source == source
    folder = tmp_path / 'dead_letter' / 'unwindowed'
    folder.mkdir(parents=True)
    pq.write_table(pa.table({'source': [d.source for d in letters]}),
                   folder / 'a.parquet')
    assert deadletter.origins_written(str(tmp_path), source) == {
        'partition=0&offset=7'}


def test_a_late_dead_letter_names_the_message_it_came_from():
    # A local read registers a message that may be late as one it cannot
    # date (transforms/io/pubsub.py): its window.late dead letter names it,
    # and a restart skips it when the sink holds that dead letter.  Before,
    # a window.late dead letter named nothing: written again after a kill.
    from apache_beam.transforms.window import IntervalWindow
    from transforms import aggregate, deadletter
    _kafka_commits.forget()
    deadletter.register_origin(b'late line', 'message=7')
    split = aggregate._SplitLate('logs', lambda value: 1, 30.0,
                                 carries_raw=True, source='pubsub://s')
    late = windows.LateRecords(
        [windows.WithRaw('value', b'late line'),
         windows.WithRaw('value', b'other line')], 5.0)
    letters = [out.value for out in split.process(
        ('svc', late), window=IntervalWindow(T0, T0 + 60))]
    assert [(d.raw, d.stage, d.source) for d in letters] == [
        (b'late line', aggregate.LATE_STAGE, 'pubsub://s#message=7'),
        (b'other line', aggregate.LATE_STAGE, 'pubsub://s')]
    _kafka_commits.forget()


def test_late_letters_of_a_record_with_several_outputs_name_their_output():
    # video_qoe: a report may be late for its session and for its rollups,
    # each a dead letter of its own.  The origin is bound to the decoded
    # record (BindOrigins takes the registration), each late letter names
    # it with its output and key, and a restart that finds some of them in
    # the sink keeps the record out of those outputs alone.
    from apache_beam.transforms.window import IntervalWindow
    from transforms import aggregate, deadletter
    _kafka_commits.forget()
    deadletter.register_origin(b'report', 'message=7')
    deadletter.register_origin(b'again', 'message=8',
                               ['window=rollup&key=cdn%3Da'])
    bound = [next(deadletter.BindOrigins().process((name, raw)))
             for name, raw in (('r7', b'report'), ('r8', b'again'),
                               ('r9', b'other'))]
    assert bound == [
        ('r7', deadletter.Sourced(b'report', deadletter.Origin('message=7'))),
        ('r8', deadletter.Sourced(b'again', deadletter.Origin(
            'message=8', frozenset({'window=rollup&key=cdn%3Da'})))),
        ('r9', b'other')]
    assert deadletter.claim_origin(b'report') is None     # taken once
    session = aggregate._SplitLate('video_qoe', lambda value: 1, 30.0,
                                   carries_raw=True, source='pubsub://s',
                                   output='session')
    late = windows.LateRecords([windows.WithRaw(*b) for b in bound], 5.0)
    letters = [out.value for out in session.process(
        ('sid 1', late), window=IntervalWindow(T0, T0 + 60))]
    assert [(d.raw, d.source) for d in letters] == [
        (b'report', 'pubsub://s#message=7&window=session&key=sid%201'),
        (b'again', 'pubsub://s#message=8&window=session&key=sid%201'),
        (b'other', 'pubsub://s')]
    # A value that carries its origin alone is kept as JSON.
    rollup = aggregate._SplitLate('video_qoe', lambda value: 1, 30.0,
                                  carries_raw=True, source='pubsub://s',
                                  output='rollup')
    [letter] = [out.value for out in rollup.process(
        ('cdn=a', windows.LateRecords([windows.WithRaw(
            {'n': 1}, deadletter.Sourced(None, bound[0][1].origin))], 5.0)),
        window=IntervalWindow(T0, T0 + 60))]
    assert letter.raw == b'{"n":1}' and letter.source == \
        'pubsub://s#message=7&window=rollup&key=cdn%3Da'
    # Restart: message 8's rollup letter for cdn=a is written: it stays
    # out of that grouping (and key) only.
    count = aggregate._CountCarried('video_qoe', lambda value: 1, 'rollup')
    passed = [(key, b[0]) for key in ('cdn=a', 'all') for b in bound
              if list(count.process((key, windows.WithRaw(*b))))]
    assert passed == [('cdn=a', 'r7'), ('cdn=a', 'r9'), ('all', 'r7'),
                      ('all', 'r8'), ('all', 'r9')]
    assert deadletter.split_tag(letter.source.split('#')[1]) == (
        'message=7', 'window=rollup&key=cdn%3Da')
    _kafka_commits.forget()


def test_a_late_registration_stays_while_what_its_record_made_is_pending(
        ledger):
    # The read's values are stamped with its estimator's watermark, which
    # starts empty on the local runner: once the raw value is decoded the
    # read counts as processed, though the decoded record (stamped with its
    # event time) is still pending before the grouping that finds it late.
    # Its registration stays until nothing at or before its windows' close
    # is pending.  Before, it was forgotten with the processed position,
    # and its late dead letter, made after, named nothing (seen on a
    # 4-partition stream under load: 7 of 9 late dead letters unnamed).
    from transforms import deadletter
    spec, _ = ledger
    source = 'kafka://b:1/t?group=g'
    low = -9223372036854.775
    _kafka_commits.started(spec, 0, 0)
    _kafka_commits.emitted(spec, 0, 11, T0 + 100, stamped=low,
                           late=[(10, FINAL_AT(T0 + 1), low, b'late')])
    deadletter.register_origin(b'late', 'partition=0&offset=10')
    _handed_over()
    _kafka_commits.release(T0 - 50, T0 + 1 - 1e-6)  # decoded, pending
    letter = deadletter.dead_letter(b'late', 'window.late', 'late', source)
    assert letter.source == f'{source}#partition=0&offset=10'


VIDEO_WINDOWS = (windows.parse_window('session:30m'),
                 windows.parse_window('fixed:60s'))
VIDEO_TRIGGER = windows.parse_trigger('late=1,lateness=30s,accumulating')


def test_no_horizon_passes_a_window_of_a_record_read_again(ledger):
    # video_qoe: a report is in its session (never final before the read
    # ends: "final at" infinite, so its offset is never committed and a
    # restart reads it again) and in a rollup window, which is final once
    # the watermark passes its end plus the lateness.  A commit carrying a
    # horizon past that rollup window would keep its pane at a restart,
    # which reads the report again and finds it late for that window: a
    # late dead letter beside its contribution in the kept pane (counted
    # twice), whether the report was in the window or (pending when the
    # runner looked) late for it.  So the horizon committed stops before
    # the first window to close of every record a restart reads again;
    # one read but not handed over when the runner looked is not in that
    # horizon (late for the windows final there: its letters name their
    # output); and a horizon committed never goes back: a record handed
    # over later whose first window closes before it holds the horizon
    # where it is.  The oracle: no window of a handed-over record that is
    # read again is final at a committed horizon.
    spec, commits = ledger
    final_at = windows.FinalAt(VIDEO_WINDOWS, VIDEO_TRIGGER.lateness)
    late_from = windows.LateFrom(VIDEO_WINDOWS, VIDEO_TRIGGER)
    _kafka_commits.forget()
    _kafka_commits.track(spec, final_at, commits.append)
    _kafka_commits.started(spec, 0, 0)
    assert late_from(T0 + 10) == T0 + 90 and final_at(T0 + 10) == \
        float('inf')
    # records 0-9 at T0+10..T0+19 (rollup window [T0, T0+60))
    _kafka_commits.emitted(spec, 0, 10, T0 + 19, stamped=T0 + 5,
                           first=late_from(T0 + 10))
    # records 10-19 at T0+70: read, not yet handed over
    _kafka_commits.emitted(spec, 0, 20, T0 + 70, stamped=T0 + 65,
                           first=late_from(T0 + 70))
    _kafka_commits.read_committed()
    _kafka_commits.emitted(spec, 0, 30, T0 + 200, stamped=T0 + 195,
                           first=late_from(T0 + 75))
    _kafka_commits.prepare()
    _kafka_commits.release(T0 + 300, None)
    _, offset, meta = commits[-1][0]
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert offset == 0 and resume.read == 20
    assert resume.horizon < late_from(T0 + 10)
    assert resume.horizon == pytest.approx(T0 + 90, abs=0.01)
    # Records 10-29 handed over now: records 0-9 still hold the horizon.
    _kafka_commits.read_committed()
    _kafka_commits.prepare()
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _kafka_commits.release(T0 + 300, None)
    # A record handed over after a commit past its first window (read
    # late for its rollup): no commit until the read ends, none with a
    # lower horizon.
    count = len(commits)
    _kafka_commits.emitted(spec, 0, 31, T0 + 200, stamped=T0 + 195,
                           first=late_from(T0 - 60))
    _handed_over()
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _kafka_commits.release(T0 + 400, None)
    assert len(commits) == count
    assert all(_kafka_commits.Resume.parse(o, m).horizon < T0 + 90
               for commit in commits for _, o, m in commit)
    _kafka_commits.release(float('inf'), None)
    _, offset, meta = commits[-1][0]
    assert offset == 31 and _kafka_commits.Resume.parse(offset,
                                                        meta).complete


def test_sliding_commits_move_on_and_a_restart_keeps_out_final_windows(
        ledger):
    # Sliding windows (2m/1m, no lateness: a record at T0+10 is in
    # [T0-60, T0+60) and [T0, T0+120)), where a restart keeps a record it
    # reads again out of its windows final at the committed horizon
    # (windows.LateFrom.keeps_out: the read gives no first close).  The
    # commit carries the runner's horizon, not one held before the first
    # window of every record not yet final (which, in a stream with no
    # gap of a period, held it below the earliest record: nothing
    # committed until the read ended).  The oracle, per (record, window):
    # in the final pane written before the kill (handed over before the
    # look, the window closing by the horizon) or assigned again at the
    # restart (read again, not already counted, the window not closing by
    # the horizon, as transforms.aggregate keeps it out), exactly once.
    spec, commits = ledger
    trigger = windows.TriggerSpec(late=1, lateness=0.0)
    sliding = (windows.parse_window('sliding:2m/1m'),)
    final_at = windows.FinalAt(sliding, 0.0)
    late_from = windows.LateFrom(sliding, trigger)
    assert late_from.keeps_out
    _kafka_commits.forget()
    _kafka_commits.track(spec, final_at, commits.append)
    _kafka_commits.started(spec, 0, 0)
    times = [T0 + 10] * 10 + [T0 + 70] * 10 + [T0 + 130] * 10
    for stop in (10, 20, 30):
        _kafka_commits.emitted(spec, 0, stop, times[stop - 1],
                               stamped=times[stop - 1] - 5)
    _handed_over()
    _kafka_commits.release(T0 + 125, None)
    _, offset, meta = commits[-1][0]
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert (offset, resume.horizon, resume.read) == (10, T0 + 125, 30)

    def ends(at):
        end = (int(at) // 60 + 1) * 60
        return (end, end + 60)

    counted = {(o, e): 0 for o, t in enumerate(times) for e in ends(t)}
    for o, t in enumerate(times):
        for end in ends(t):
            if end <= resume.horizon:        # final before the kill
                counted[o, end] += 1
            elif o >= resume.offset and \
                    not resume.already_counted(o, t, final_at):
                counted[o, end] += 1         # assigned at the restart
    assert set(counted.values()) == {1}, counted
    # (the restart reads records 10-29 again: 10-19 kept out of
    # [T0, T0+120), 20-29 out of nothing)
    assert [o for o, t in enumerate(times) if o >= resume.offset and
            late_from(t) <= resume.horizon] == list(range(10, 20))
    # A record that may be late, not settled, still holds the horizon
    # before each of its windows: record 30 at T0+80 ([T0, T0+120),
    # [T0+60, T0+180)), read when a commit's horizon is past its first:
    # no commit until it is settled.
    _kafka_commits.emitted(spec, 0, 31, T0 + 130, stamped=T0 + 135,
                           late=[(30, late_from(T0 + 80), T0 + 135, b'x')])
    _handed_over()
    count = len(commits)
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _kafka_commits.release(T0 + 190, T0 + 130)
    assert len(commits) == count
    time.sleep(_kafka_commits.MIN_INTERVAL)
    _kafka_commits.release(T0 + 190, T0 + 200)        # settled
    _, offset, meta = commits[-1][0]
    resume = _kafka_commits.Resume.parse(offset, meta)
    assert (offset, resume.horizon, resume.read) == (20, T0 + 190, 31)
    # Where the read gives the first close (sessions: video_qoe), the
    # horizon is held before it, as before.
    _kafka_commits.forget()
    commits.clear()
    _kafka_commits.track(spec, final_at, commits.append)
    _kafka_commits.started(spec, 0, 0)
    for stop in (10, 20, 30):
        _kafka_commits.emitted(spec, 0, stop, times[stop - 1],
                               stamped=times[stop - 1] - 5,
                               first=late_from(times[stop - 10]))
    _handed_over()
    _kafka_commits.release(T0 + 125, None)
    _, offset, meta = commits[-1][0]
    assert _kafka_commits.Resume.parse(offset, meta).horizon < T0 + 60


def test_the_columnar_partials_take_origins_as_bind_origins_does():
    """A block's payloads matched against the registry at once: the rows
    a read registered, in order, each taking the first Origin registered
    for its payload (equal payloads their own, in turn), the others
    untouched; nothing where none is registered."""
    import pyarrow as pa
    from transforms import deadletter
    _kafka_commits.forget()
    deadletter.forget_origins()
    block = pa.array([b'a', b'b', b'a', b'c', b'a'], pa.binary())
    assert deadletter.claim_origins(block) is None     # nothing registered
    deadletter.register_origin(b'a', 'partition=0&offset=1', final_by=5.0)
    deadletter.register_origin(b'a', 'partition=0&offset=3')
    deadletter.register_origin(b'c', 'partition=0&offset=4')
    deadletter.register_origin(b'z', 'partition=0&offset=9')
    rows, origins = deadletter.claim_origins(block)
    assert rows.tolist() == [0, 2, 3, 4]
    assert origins == [deadletter.Origin('partition=0&offset=1', final_by=5.0),
                       deadletter.Origin('partition=0&offset=3'),
                       deadletter.Origin('partition=0&offset=4'), None]
    # taken: only the payload no line held is left
    assert deadletter.claim_origin(b'a') is None
    assert deadletter.claim_origin(b'z') == deadletter.Origin(
        'partition=0&offset=9')
    deadletter.forget_origins()
