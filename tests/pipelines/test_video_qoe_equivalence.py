"""The block path of video_qoe against the element path (the reference), on
the same replays: every session, rollup, alert and dead letter, pane by pane
(a bounded replay has one ON_TIME pane per window)."""
import pyarrow.dataset as ds
import pytest

from pipelines import run, video_qoe
from transforms.io import parse_uri, synthetic

TABLES = {
    'sessions': ['session_id', 'window_start', 'pane_index'],
    'qoe_rollups': ['dimension', 'value', 'window_start', 'pane_index'],
    'alerts': ['key', 'metric', 'window_start', 'state'],
    'dead_letter': ['raw', 'reason'],
}


def lines(uri):
    return list(synthetic.generate(parse_uri(uri)).payloads())


def replay(tmp_path, data, execution, *argv):
    path = tmp_path / 'in.log'
    path.write_bytes(b'\n'.join(data) + b'\n')
    out = tmp_path / execution
    summary = run.run(video_qoe, [
        '--source', f'file://{path}?block_bytes=4096', '--sink',
        f'parquet://{out}', '--execution', execution, '--no-summary', *argv])
    tables = {}
    for table, keys in TABLES.items():
        frame = ds.dataset(str(out / table)).to_table().to_pandas() \
            if (out / table).is_dir() else None
        if frame is not None:
            frame = frame.drop(columns=[c for c in ('error_time',)
                                        if c in frame]) \
                .sort_values(keys).reset_index(drop=True)
        tables[table] = frame
    return summary, tables


# Viewings that pause 40 minutes (two sessions of one sid; the first of
# "gapexit" never plays) and one whose reports tie in time.
EXTRA = [
    b'e=ps,sid="gap",sta=p,ts=1767225600000,v=2',
    b'e=t,sid="gap",sta=p,br=(3000;v),ts=1767225630000,v=2',
    b'e=ps,sid="gap",sta=r,ts=1767228030000,v=2',
    b'e=ps,sid="gap",sta=p,ts=1767228032000,v=2',
    b'e=ps,sid="gap",sta=e,ts=1767228092000,v=2',
    b'e=ps,sid="tie",sta=r,ts=1767225700000,v=2',
    b'e=ps,sid="tie",sta=p,ts=1767225700000,v=2',
    b'e=ps,sid="tie",sta=e,ts=1767225760000,v=2',
    b'e=ps,sid="gapexit",sta=s,ts=1767225600000,v=2',
    b'e=ps,sid="gapexit",sta=p,ts=1767228000000,v=2',
    b'e=ps,sid="gapexit",sta=e,ts=1767228060000,v=2',
]


@pytest.mark.parametrize('uri, argv', [
    ('synthetic://video?sessions=80&seed=5&late=0.05&malformed=0.03'
     '&exit=0.1&fail=0.05', []),
    ('synthetic://video?sessions=40&seed=9&json=0.5',
     ['--window', 'session:5m', '--rollup_window', 'sliding:2m/1m']),
])
def test_block_path_equals_element_path(tmp_path, uri, argv):
    data = lines(uri) + EXTRA
    s_block, block = replay(tmp_path, data, 'columnar', *argv)
    s_element, element = replay(tmp_path, data, 'element', *argv)
    for key in ('read', 'decoded', 'dead_lettered', 'filtered',
                'window_assignments', 'aggregated', 'panes_on_time',
                'alerts_raised', 'alerts_recovered', 'rows_written'):
        assert s_block[key] == s_element[key], key
    assert s_block['balanced']
    for table in TABLES:
        a, b = block[table], element[table]
        assert (a is None) == (b is None), table
        if a is not None:
            assert a.equals(b), (table, a.compare(b) if a.shape == b.shape
                                 else (a.shape, b.shape))
    sessions = element['sessions']
    if not argv:
        assert (sessions.session_id == 'gap').sum() == 2
        gapexit = sessions[sessions.session_id == 'gapexit']
        assert gapexit.exit_before_video_start.tolist() == [True, False]
