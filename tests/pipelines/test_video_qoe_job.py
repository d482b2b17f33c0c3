"""The video_qoe job end to end: file replays of each input form (report
bodies, access-log lines, JSON lines, and all mixed), the four tables written,
sessions against pandas on the same lines, rollups consistent with the
sessions, every record accounted for."""
import pyarrow.dataset as ds
import pytest

from pipelines import run, video_qoe
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
