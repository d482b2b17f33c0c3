"""The block path of video_qoe against the element path (the reference), on
the same replays: every session, rollup, alert and dead letter, pane by pane
(a bounded replay has one ON_TIME pane per window); and the vectorised CMCD
JSON reader against the reference decoder, line by line, on canonical lines
and on lines a step away from them."""
import pyarrow.dataset as ds
import pytest

from pipelines import run, video_qoe
from transforms.columnar import line_bounds
from transforms.decode import decode_payload
from transforms.io import parse_uri, synthetic
from transforms.video import cmcd_columnar, decoders

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


# Canonical CMCD JSON lines (the vectorised reader takes them) and lines a
# step away from that shape, each of which the reference decoder reads (or
# refuses) its own way: the reader must hand every one of those back.
_T = 1767225600000
CANONICAL = [
    b'{"e":"ps","sta":"p","msd":1751,"br":1600,"cid":"news-live",'
    b'"sid":"j1","sn":2,"ts":%d,"v":2,"st":"l","sf":"d","cdn":"cdn-c.example"}'
    % (_T + 1000),
    b'{"sid":"j1","ts":%d,"sta":"r","bs":true,"bl":300}' % (_T + 5000),
    b'{"sid":"j1","ts":%d,"sta":"p","ec":["E1","E2"],"bsd":3319}'
    % (_T + 9000),
    b'{"ts":%d,"sid":"j2","e":"e","ec":"MEDIA_ERR","cid":""}' % (_T + 2000),
    b'{"ts":%d,"sid":"j2","sta":"f","ec":[]}' % (_T + 3000),
    b'{"ts":%d,"sid":"' % (_T + 4000) + b's' * 64 + b'","sta":"s"}',
    b'{"sid":"j3","ts":0,"sta":"s"}',                      # 1970: in range
    b'{"sid":"j4","ts":%d,"bsd":999999999999999,"cid":"' % (_T + 7000)
    + b'c' * 64 + b'"}',                                   # 15 digits, 64
]
NEAR = [
    b'{"sid":"j1","ts":%d,"sta":"p","sta":"r"}' % (_T + 6000),  # twice
    b'{"sid":"j1","ts":%d,"ts":"x"}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"bl":150}' % (_T + 6000),         # not 100 ms
    b'{"sid":"j1","ts":%d,"br":-1}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"br":[4200]}' % (_T + 6000),      # inner list
    b'{"sid":"j1","ts":%d,"mtp":0}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"sta":"x"}' % (_T + 6000),        # reserved
    b'{"sid":"j1","ts":%d,"sta":"P"}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"bs":false}' % (_T + 6000),
    b'{"sid":"j1","ts":"%d"}' % (_T + 6000),
    b'{"sid":"j1","ts":%d.0}' % (_T + 6000),
    b'{"sid":"j1","ts":1e3}',
    b'{"sid":"j1","ts":01767225600000}',
    b'{"sid":"j1","ts":253402300800000}',                    # year 10000
    b'{"sid":"j1","ts":9999999999999999999999}',
    b'{"sid":"","ts":%d}' % (_T + 6000),                     # no session
    b'{"ts":%d,"sta":"p"}' % (_T + 6000),
    b'{"sid":"' + b's' * 65 + b'","ts":%d}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"cid":"' % (_T + 6000) + b'c' * 65 + b'"}',
    b'{"sid":"j1","ts":%d,"bsd":1000000000000000}' % (_T + 6000),  # 16
    b'{"sid":"j1","ts":%d,"sn":00}' % (_T + 6000),
    b'{"sid":"j\\u0031","ts":%d}' % (_T + 6000),             # escaped
    b'{"sid":"j1","ts":%d,"cid":"a\\"b"}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"cid":"a,b"}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"cid":"a:b"}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"cid":"\xc3\xa9"}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"cid":null}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"com.example-x":"y"}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"note":"from 203.0.113.77"}' % (_T + 6000),
    b'{"sid":"j1", "ts":%d}' % (_T + 6000),                  # a blank
    b'{"sid":"j1","ts":%d}\r' % (_T + 6000),
    b' {"sid":"j1","ts":%d}' % (_T + 6000),
    b'{"sid":"j1","ts":%d}}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"ec":[1]}' % (_T + 6000),
    b'{"sid":"j1","ts":%d,"ec":["a",]}' % (_T + 6000),
    b'{"cmcd":{"sid":"j1","ts":%d}}' % (_T + 6000),
    b'{"sid":"j1","event_time":"2026-01-01T00:00:07Z"}',
    b'{"sid":"j1","ts":%d,"event_time":"x"}' % (_T + 6000),
    b'{}', b'', b'{', b'\xff\xfe',
    b'e=ps,sid="j1",sta=p,ts=%d,v=2' % (_T + 7000),
]


def test_vectorised_reader_takes_canonical_lines_only():
    reader = cmcd_columnar.BlockDecoder(decoders.make_decoder('auto'),
                                        'decode.video')
    lines = NEAR[:10] + CANONICAL + NEAR[10:]
    data = b'\n'.join(lines)
    columns, others = cmcd_columnar.decode_block(
        data, *line_bounds(data), reader.max_bytes)
    first = len(NEAR[:10])
    assert sorted(columns.lines.tolist()) == list(
        range(first, first + len(CANONICAL)))
    assert others.tolist() == [i for i in range(len(lines))
                               if not first <= i < first + len(CANONICAL)]
    # The whole block reads exactly as the reference reads each line.
    fast, fast_refused, fast_count = reader.decode(data)
    ref, ref_refused, ref_count = reader.decode_each(lines)
    assert fast_count == ref_count == len(CANONICAL) + sum(
        1 for r in NEAR if _reference_accepts(r))
    assert sorted(fast.rows()) == sorted(ref.rows())
    assert [_refusal(r) for r in fast_refused] == \
        [_refusal(r) for r in ref_refused]


def _refusal(result):
    return (result.raw, result.stage, result.reason) \
        if hasattr(result, 'raw') else ('filtered', result.name)


def _reference_accepts(raw):
    result = decode_payload(raw, decoders.make_decoder('auto'), 'decode.video')
    return hasattr(result, 'session_id')


def test_block_path_equals_element_path_on_json_edge_lines(tmp_path):
    data = lines('synthetic://video?sessions=20&seed=3&json=1.0') \
        + CANONICAL + NEAR
    s_block, block = replay(tmp_path, data, 'columnar')
    s_element, element = replay(tmp_path, data, 'element')
    for key in ('read', 'decoded', 'dead_lettered', 'filtered'):
        assert s_block[key] == s_element[key], key
    assert block['sessions'] is not None and block['dead_letter'] is not None
    for table in TABLES:
        a, b = block[table], element[table]
        assert (a is None) == (b is None), table
        assert a is None or a.equals(b), table
