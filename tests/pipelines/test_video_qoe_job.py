"""The video_qoe job end to end: file replays of each input form (report
bodies, access-log lines, JSON lines, and all mixed), the four tables written,
sessions against pandas on the same lines, rollups consistent with the
sessions, every record accounted for."""
import apache_beam as beam
import orjson
import pyarrow.dataset as ds
import pytest
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from pipelines import run, video_qoe
from tests.pipelines.job_streams import add, run_job
from tests.transforms.test_video_sessions import (assert_same,
                                                  pandas_sessions,
                                                  reports_of)
from transforms.io import parse_uri, synthetic

URI = ('synthetic://video?sessions=60&seed=11&late=0.02&malformed=0.02'
       '&exit=0.1&fail=0.05')
TABLES = ('sessions', 'qoe_rollups', 'alerts', 'dead_letter')


@pytest.fixture(scope='module')
def payloads():
    return list(synthetic.generate(parse_uri(URI)).payloads())


def replay(tmp_path, lines, name='in.log', *argv):
    path = tmp_path / name
    path.write_bytes(b'\n'.join(lines) + b'\n')
    out = tmp_path / 'out'
    summary = run.run(video_qoe, ['--source', f'file://{path}', '--sink',
                                  f'parquet://{out}', '--no-summary',
                                  *argv])
    tables = {}
    for table in TABLES:
        if (out / table).is_dir():
            tables[table] = ds.dataset(str(out / table)).to_table() \
                .to_pandas()
    return summary, tables


def final(sessions):
    """The final pane of each session window."""
    idx = sessions.groupby(['session_id', 'window_start'])['pane_index'] \
        .idxmax()
    return sessions.loc[idx].set_index('session_id')


def test_a_replay_of_every_form_writes_the_four_tables(tmp_path, payloads):
    summary, tables = replay(tmp_path, payloads)
    assert summary['balanced']
    assert summary['read'] == len(payloads)
    assert summary['dead_lettered'] > 0
    assert summary['aggregated'] == summary['window_assignments']
    assert set(tables) == set(TABLES)
    # Session rows are filed by the hour their window starts in, not one
    # folder and file per session.
    folders = list((tmp_path / 'out' / 'sessions').iterdir())
    assert len(folders) == 1 and folders[0].name == \
        '20260101T000000Z_20260101T010000Z'
    assert len(list(folders[0].iterdir())) < len(tables['sessions']) / 5
    dead = tables['dead_letter']
    assert len(dead) == summary['dead_lettered']
    assert dead['reason'].str.contains('CMCD').any()
    assert (dead['stage'] == 'decode.video').all()
    # The sessions are those pandas finds in the same lines.
    sessions = final(tables['sessions'])
    reports = reports_of(URI)
    oracle = pandas_sessions(reports)
    assert sorted(sessions.index) == sorted(oracle.index)
    for sid, row in sessions.iterrows():
        ours = {f: (None if (v is None or v != v) else v)
                for f, v in row.items()}
        for field in ('video_start_time_ms',):
            if ours[field] is not None:
                ours[field] = int(ours[field])
        assert_same(ours, oracle.loc[sid], sid)


def test_rollups_add_up_to_the_sessions(tmp_path, payloads):
    """Two independent paths: the session windows (a CombineFn) and the
    per-session walk into rollup windows give the same totals."""
    _, tables = replay(tmp_path, payloads)
    sessions = final(tables['sessions'])
    rollups = tables['qoe_rollups']
    every = rollups[rollups['dimension'] == 'all']
    assert every['rebuffer_ms'].sum() == sessions['rebuffer_ms'].sum()
    assert every['playing_ms'].sum() == sessions['playing_ms'].sum()
    assert every['errors'].sum() == sessions['error_count'].sum()
    assert every['failures'].sum() == sessions['failed'].sum()
    assert every['exits_before_video_start'].sum() == \
        sessions['exit_before_video_start'].sum()
    assert every['plays'].sum() == (sessions['playing_ms'] > 0).sum() + \
        ((sessions['playing_ms'] == 0) & ~sessions['failed'] &
         ~sessions['exit_before_video_start']).sum()
    assert every['count'].sum() == sessions['report_count'].sum()
    # Each dimension partitions the same reports.
    for dimension in ('content', 'cdn', 'stream_type'):
        part = rollups[rollups['dimension'] == dimension]
        assert part['count'].sum() == every['count'].sum(), dimension
        assert part['playing_ms'].sum() == every['playing_ms'].sum()


def form_of(payload):
    if payload.startswith(b'{'):
        return 'json'
    return 'access_log' if b'] "GET ' in payload else 'report'


@pytest.mark.parametrize('form', ['report', 'access_log', 'json'])
def test_each_input_form_alone(tmp_path, payloads, form):
    lines = [p for p in payloads if form_of(p) == form]
    summary, tables = replay(tmp_path, lines, 'in.log',
                             '--cmcd_format', form)
    assert summary['balanced']
    assert summary['decoded'] > 0.9 * len(lines)
    assert len(tables['sessions']) > 0
    assert len(tables['qoe_rollups']) > 0
    if form == 'access_log':
        cdns = set(tables['sessions']['cdn'])
        assert cdns <= {'cdn-a.example', 'cdn-b.example', 'cdn-c.example'}


def test_a_file_without_session_ids_is_counted_not_lost(tmp_path):
    lines = [b'e=t,ts=1764752400000,v=2',                 # 8.2.1: no sid
             b'e=ps,sid="a",sta=p,ts=1764752400000,v=2',
             b'bs=true,e=ps,sid="a",ts=1764752400001,v=2']
    summary, tables = replay(tmp_path, lines)
    assert summary['filters'] == {'no_session_id': 1}
    assert (summary['decoded'], summary['dead_lettered']) == (1, 1)
    assert tables['dead_letter']['reason'].tolist() == [
        'CMCD incorrect-format key bs: If the value is TRUE, the = and the '
        'value must be omitted']


def test_a_window_that_is_not_a_session_window_is_refused(capsys):
    with pytest.raises(SystemExit) as err:
        run.run(video_qoe, ['--window', 'fixed:60s'])
    assert err.value.code == 2
    assert 'argument --window' in capsys.readouterr().err


# ------------------------------------------- a stream: late reports are kept

def cmcd(sid, offset_s, state):
    """(event time s, a CMCD v2 JSON report of ``sid`` at offset_s)."""
    return STREAM_T0 / 1000 + offset_s, orjson.dumps({
        'e': 'ps', 'sta': state, 'cid': 'movie', 'sid': sid, 'v': 2,
        'ts': int(STREAM_T0 + offset_s * 1000), 'st': 'v',
        'cdn': 'cdn-a.example'})


STREAM_T0 = 1767225600_000       # 2026-01-01T00:00:00Z in ms
GAP_S, LATENESS_S = 1800, 120


def late_reports(outputs):
    """The payloads of the reports kept as late by the sessions (a CMCD
    report names its session, ``sid``; a rollup contribution does not)."""
    return (outputs['dead_letter']
            | 'Late' >> beam.Filter(lambda d: d.stage == 'window.late')
            | 'Raw' >> beam.Map(lambda d: bytes(d.raw))
            | 'OfSessions' >> beam.Filter(
                lambda raw: 'sid' in orjson.loads(raw)))


def session_panes(outputs):
    return outputs['sessions'] | 'Counts' >> beam.Map(
        lambda s: (s.session_id, s.pane_timing, s.report_count))


def test_a_stream_keeps_reports_after_the_allowed_lateness(
        monkeypatch, tmp_path):
    """Sessions (merging windows) and rollups (fixed windows) in one stream
    with the job's trigger: a report within the allowed lateness corrects
    its session in a LATE pane; one after it is a dead letter (stage
    window.late) of the sessions and of the rollups, none is dropped, and
    the summary adds up."""
    t0 = STREAM_T0 / 1000
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.of(t0))
    add(stream, cmcd('a', 0, 's'), cmcd('a', 10, 'p'), cmcd('a', 20, 'p'),
        cmcd('b', 0, 's'), cmcd('b', 10, 'p'))
    stream.advance_watermark_to(Timestamp.of(t0 + 30))   # rollups on time
    stream.advance_processing_time(1)
    # Both sessions close ([0, 1820) and [0, 1810)): their ON_TIME panes.
    stream.advance_watermark_to(Timestamp.of(t0 + 20 + GAP_S + 1))
    add(stream, cmcd('a', 5, 'p'))          # within a's allowed lateness
    stream.advance_processing_time(1)
    # After b's session closed for good (end 1810 + 120 s of lateness).
    stream.advance_watermark_to(Timestamp.of(t0 + 10 + GAP_S + LATENESS_S
                                             + 60))
    add(stream, cmcd('b', 12, 'p'))
    stream.advance_processing_time(1)
    stream.advance_watermark_to_infinity()

    def check(outputs):
        assert_that(late_reports(outputs),
                    equal_to([cmcd('b', 12, 'p')[1]]), label='LateReports')
        assert_that(session_panes(outputs), equal_to([
            ('a', 'ON_TIME', 3), ('a', 'LATE', 4), ('b', 'ON_TIME', 2)]),
            label='SessionPanes')

    summary = run_job(video_qoe, stream, monkeypatch, tmp_path, [
        '--trigger', f'late=1,lateness={LATENESS_S}s,accumulating',
        '--cmcd_format', 'json'], check)
    assert summary['read'] == summary['decoded'] == 7
    assert summary['dropped_late'] == 0 and summary['late_accepted'] >= 1
    # Sessions: 7 reports, 6 aggregated, 1 kept.  Rollups: each report once
    # per dimension (4); those at 5 and 12 s fall in [0, 60), closed 180 s
    # after T0, so both are kept there.
    assert summary['window_assignments'] == 7 + 7 * 4
    assert summary['late_kept'] == 1 + 2 * 4
    assert summary['window_assignments'] == \
        summary['aggregated'] + summary['late_kept']
    letters = read_letters(tmp_path / 'out')
    late = letters[letters.stage == 'window.late']
    assert len(late) == 1 + 2 * 4
    assert late.reason.str.contains('after it closed').all()


def test_a_report_joining_a_finished_session_is_kept(monkeypatch, tmp_path):
    """With no allowed lateness the session's trigger finishes at its ON_TIME
    pane.  A report inside the closed session whose own window [ts, ts + gap)
    has not ended is not late by Beam's rule, but merges into the finished
    session, which Beam's trigger driver then skips without a trace: it is
    a dead letter too, in the session it joined."""
    t0 = STREAM_T0 / 1000
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.of(t0))
    add(stream, cmcd('a', 0, 's'), cmcd('a', 10, 'p'), cmcd('a', 20, 'p'))
    stream.advance_watermark_to(Timestamp.of(t0 + 30))   # rollups on time
    stream.advance_processing_time(1)
    stream.advance_watermark_to(Timestamp.of(t0 + 20 + GAP_S + 1))
    add(stream, cmcd('a', 1000, 'p'))       # its window ends at 2800 s
    stream.advance_processing_time(1)
    stream.advance_watermark_to_infinity()

    def check(outputs):
        assert_that(late_reports(outputs),
                    equal_to([cmcd('a', 1000, 'p')[1]]),
                    label='LateReports')
        assert_that(session_panes(outputs), equal_to([('a', 'ON_TIME', 3)]),
                    label='SessionPanes')

    summary = run_job(video_qoe, stream, monkeypatch, tmp_path, [
        '--trigger', 'default', '--cmcd_format', 'json'], check)
    assert summary['dropped_late'] == 0
    # Kept: the report by the sessions, and its 4 contributions to the
    # rollup window [960, 1020) s, closed long before.
    assert summary['late_kept'] == 1 + 4
    assert summary['window_assignments'] == \
        summary['aggregated'] + summary['late_kept']
    letters = read_letters(tmp_path / 'out')
    session = letters[(letters.stage == 'window.late')
                      & letters.reason.str.contains("of 'a' for window")]
    assert session.reason.str.contains(
        'its trigger had fired its final pane').sum() == 1


def test_a_late_report_extending_a_session_past_the_watermark(
        monkeypatch, tmp_path):
    """A report within the allowed lateness that extends a closed session
    past the watermark: the merged session inherits the trigger's late
    phase (its ON_TIME pane has fired), so it fires at once, a pane Beam
    labels EARLY (the watermark is before the merged window's end) and the
    last of that window.  Beam's driver kept that pane's watermark hold for
    an ON_TIME pane that never comes, with no timer to release it, and the
    run stalled; the local runner releases it (pipelines/local_runner.py),
    and every report is in a session's final pane."""
    t0 = STREAM_T0 / 1000
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.of(t0))
    add(stream, cmcd('a', 0, 's'), cmcd('a', 10, 'p'), cmcd('a', 20, 'p'))
    stream.advance_watermark_to(Timestamp.of(t0 + 30))
    stream.advance_processing_time(1)
    stream.advance_watermark_to(Timestamp.of(t0 + 20 + GAP_S + 1))
    add(stream, cmcd('a', 25, 'p'))         # session now ends at 1825 s
    stream.advance_processing_time(1)
    stream.advance_watermark_to_infinity()

    def check(outputs):
        windows_of = outputs['sessions'] | 'Windows' >> beam.Map(
            lambda s: (s.pane_timing, s.report_count, s.pane_index,
                       s.window_end))
        assert_that(windows_of, equal_to([
            ('ON_TIME', 3, 0, Timestamp.of(t0 + 20 + GAP_S)),
            ('EARLY', 4, 0, Timestamp.of(t0 + 25 + GAP_S))]),
            label='SessionPanes')
        assert_that(late_reports(outputs), equal_to([]), label='NoneLate')

    summary = run_job(video_qoe, stream, monkeypatch, tmp_path, [
        '--trigger', f'late=1,lateness={LATENESS_S}s,accumulating',
        '--cmcd_format', 'json'], check)
    assert summary['read'] == summary['decoded'] == 4
    assert summary['dropped_late'] == 0
    assert summary['window_assignments'] == \
        summary['aggregated'] + summary['late_kept']


def read_letters(out):
    return ds.dataset(str(out / 'dead_letter')).to_table().to_pandas()


# ------------------------------------- a stream read as a backlog, in order

BACKLOG_URI = 'synthetic://video?sessions=30&seed=5'
ROLLUP_FIELDS = ['count', 'active_sessions', 'plays',
                 'video_start_time_p50_ms', 'video_start_time_p95_ms',
                 'rebuffer_ms', 'playing_ms', 'errors', 'failures',
                 'exits_before_video_start']


def final_rollups(rollups):
    """The final pane of each rollup window and dimension value."""
    idx = rollups.groupby(['dimension', 'value', 'window_start'])[
        'pane_index'].idxmax()
    return rollups.loc[idx].set_index(
        ['dimension', 'value', 'window_start'])[ROLLUP_FIELDS].sort_index()


def test_an_in_order_backlog_rolls_up_as_a_file_replay(monkeypatch, tmp_path):
    """Reports in event-time order, read as a backlog is (a pull of 60 at a
    time, the watermark then jumping to the newest minus 5 s, as the Pub/Sub
    read moves it), with the job's trigger: nothing is late, so no dead
    letter is kept as late, and the final pane of every rollup window and
    session equals a file replay of the same lines.  The rollups come from
    the session walk's event-time timers: the local runner let the walk's
    output watermark pass a rollup window before the timers of its reports
    had fired, and 208 of the 1,770 window assignments (every one a
    rollup's) were kept as late, 39 of the 163 rollup windows missing."""
    records = sorted(synthetic.generate(parse_uri(BACKLOG_URI)).records(),
                     key=lambda r: r[0])
    stream = test_stream.TestStream().advance_watermark_to(
        Timestamp.of(records[0][0] - 10))
    for start in range(0, len(records), 60):
        pulled = records[start:start + 60]
        add(stream, *pulled)
        stream.advance_watermark_to(Timestamp.of(pulled[-1][0] - 5))
        stream.advance_processing_time(1)
    stream.advance_watermark_to_infinity()
    summary = run_job(video_qoe, stream, monkeypatch, tmp_path / 'stream',
                      [], lambda outputs: None)
    monkeypatch.undo()
    (tmp_path / 'replay').mkdir()
    replayed, tables = replay(tmp_path / 'replay', [p for _, p in records])

    assert summary['late_kept'] == summary['dropped_late'] == 0
    assert summary['window_assignments'] == summary['aggregated'] == \
        replayed['window_assignments']
    out = tmp_path / 'stream' / 'out'
    if (out / 'dead_letter').is_dir():
        assert not (read_letters(out).stage == 'window.late').any()
    assert summary['dead_lettered'] == replayed['dead_lettered']
    streamed = ds.dataset(str(out / 'qoe_rollups')).to_table().to_pandas()
    expected = final_rollups(tables['qoe_rollups'])
    assert len(expected) > 150
    assert final_rollups(streamed).equals(expected)
    sessions = ds.dataset(str(out / 'sessions')).to_table().to_pandas()
    assert final(sessions).drop(columns=['pane_timing', 'pane_index']) \
        .sort_index().equals(final(tables['sessions']).drop(
            columns=['pane_timing', 'pane_index']).sort_index())
