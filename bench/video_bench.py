"""Benchmark of the video_qoe job's replay path against plain pyarrow/numpy.

Input: the synthetic sessions as CMCD JSON lines (every session reports JSON,
no access-log requests, nothing malformed or late).

Beam: ``python -m pipelines video_qoe --source file://INPUT --sink
parquet://OUT --runner FnApiRunner --direct_num_workers 1 --trigger default
--execution columnar`` (blocks of lines, each through the CMCD decoder,
into session fragments; sessions, rollups, alerts).  Reference: pyarrow reads the same JSON
lines, keeps the rows CMCD allows (the checks the job's decoder makes on
these keys: reserved tokens, integers >= 0, ``bl`` in 100 ms, ``sid``/``cid``
lengths, ``ts`` in range), sorts by sid, ts and sn, and numpy computes the same session metrics
(sessions split by the 30-minute gap, state durations by diff).
"""
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.json as pajson
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402  pylint: disable=wrong-import-position
# Imported before anything is measured, like pyarrow for the reference.
from pipelines import run, video_qoe  # noqa: E402
from transforms.video import cmcd  # noqa: E402
from transforms.synthetic import video as synthetic  # noqa: E402

GAP_MS = 30 * 60 * 1000


def make_input(n: int, seed: int = 5):
    """About n CMCD JSON reports (sessions of ~13 reports each)."""
    path = common.OUT / f'video-{n}-{seed}.jsonl'
    if path.exists():
        return path
    common.OUT.mkdir(parents=True, exist_ok=True)
    params = {k: v[1] for k, v in synthetic.PARAMS.items()}
    params.update(sessions=max(1, n // 13), seed=seed, json=1.0, requests=0.0,
                  malformed=0.0, late=0.0, span=max(10.0, n / 13 / 40))
    # The generator streams: a chunk of lines in memory at a time.
    return common.write_lines(path, synthetic.generate(params).payloads())


def beam_run(path, out, execution='columnar'):
    summary = run.run(video_qoe, [
        '--source', f'file://{path}', '--sink', f'parquet://{out}',
        '--runner', 'FnApiRunner', '--direct_num_workers', '1',
        '--trigger', 'default', '--execution', execution, '--no-summary'])
    return {'events': summary['read'], 'decoded': summary['decoded'],
            'balanced': summary['balanced']}


def _column(table, name, type_):
    if name not in table.column_names:
        return pa.nulls(table.num_rows, type_)
    return table[name].cast(type_)


# What CMCD requires of the keys the bench input holds (the job's decoder
# checks the same; a plain computation must not skip it).
_RESERVED = {'e': cmcd.EVENT_TYPES, 'sta': cmcd.PLAYER_STATES,
             'st': cmcd.STREAM_TYPES, 'sf': cmcd.STREAMING_FORMATS}
_NON_NEGATIVE = ('ts', 'sn', 'msd', 'v', 'br', 'bl', 'bsd')


def _valid_rows(table):
    """The rows CMCD allows: reserved tokens, integers >= 0, bl a multiple
    of 100, sid of 1..64 and cid of at most 64 characters, ts in range."""
    ok = pc.and_(pc.is_valid(table['sid']), pc.is_valid(table['ts']))
    for name, values in _RESERVED.items():
        if name in table.column_names:
            ok = pc.and_(ok, pc.or_(pc.is_null(table[name]), pc.is_in(
                table[name], value_set=pa.array(values))))
    for name in _NON_NEGATIVE:
        if name in table.column_names:
            ok = pc.and_(ok, pc.fill_null(
                pc.greater_equal(table[name], 0), True))
    if 'bl' in table.column_names:
        ok = pc.and_(ok, pc.fill_null(pc.equal(
            pc.subtract(table['bl'], pc.multiply(
                pc.divide(table['bl'], 100), 100)), 0), True))
    sid_len = pc.utf8_length(table['sid'])
    ok = pc.and_(ok, pc.and_(pc.greater(sid_len, 0),
                             pc.less_equal(sid_len, 64)))
    if 'cid' in table.column_names:
        ok = pc.and_(ok, pc.fill_null(
            pc.less_equal(pc.utf8_length(table['cid']), 64), True))
    ok = pc.and_(ok, pc.and_(pc.greater_equal(table['ts'], 0),
                             pc.less_equal(table['ts'], 253402300799999)))
    return table.filter(pc.fill_null(ok, False))


def pyarrow_run(path, out):
    table = _valid_rows(pajson.read_json(path))
    n = table.num_rows
    sn = pc.fill_null(_column(table, 'sn', pa.int64()), -1)
    t = pa.table({'sid': table['sid'], 'ts': _column(table, 'ts', pa.int64()),
                  'sn': sn})
    order = pc.sort_indices(t, sort_keys=[('sid', 'ascending'),
                                          ('ts', 'ascending'),
                                          ('sn', 'ascending')]).to_numpy()
    sid = table['sid'].take(order)
    ts = t['ts'].to_numpy()[order]
    sta = _column(table, 'sta', pa.string()).take(order)
    br = _column(table, 'br', pa.float64()).to_numpy(
        zero_copy_only=False)[order]
    msd = _column(table, 'msd', pa.float64()).to_numpy(
        zero_copy_only=False)[order]
    err = _column(table, 'ec', pa.list_(pa.string())).is_valid().to_numpy(
        zero_copy_only=False)[order]
    # Sessions: a new sid, or a gap of at least GAP_MS.
    codes = pc.dictionary_encode(sid).combine_chunks().indices.to_numpy()
    new = np.ones(n, bool)
    new[1:] = (codes[1:] != codes[:-1]) | (np.diff(ts) >= GAP_MS)
    session = np.cumsum(new) - 1
    m = int(session[-1]) + 1
    first_row = np.flatnonzero(new)
    state = sta.to_numpy(zero_copy_only=False)
    has_state = sta.is_valid().to_numpy(zero_copy_only=False)
    # The timeline: rows carrying sta, each until the next in its session.
    rows = np.flatnonzero(has_state)
    s_session = session[rows]
    s_state = state[rows]
    duration = np.zeros(rows.size, np.int64)
    same = s_session[1:] == s_session[:-1]
    duration[:-1] = np.where(same, ts[rows[1:]] - ts[rows[:-1]], 0)
    is_r = s_state == 'r'
    is_p = s_state == 'p'
    prev_r = np.zeros(rows.size, bool)
    prev_r[1:] = same & is_r[:-1]
    rebuffer_ms = np.bincount(s_session, duration * is_r, m)
    playing_ms = np.bincount(s_session, duration * is_p, m)
    rebuffer_count = np.bincount(s_session, is_r & ~prev_r, m)
    failed = np.bincount(s_session, s_state == 'f', m) > 0
    played = np.bincount(s_session, is_p, m) > 0
    # The video br in force: forward-filled within the session.
    has_br = ~np.isnan(br)
    idx = np.where(has_br, np.arange(n), -1)
    np.maximum.accumulate(idx, out=idx)
    valid = (idx >= 0) & (session[np.maximum(idx, 0)] == session)
    in_force = np.where(valid, br[np.maximum(idx, 0)], np.nan)
    weight = np.where(is_p & ~np.isnan(in_force[rows]), duration, 0)
    weighted = np.bincount(s_session, weight * np.nan_to_num(in_force[rows]),
                           m)
    weight_ms = np.bincount(s_session, weight, m)
    br_rows = np.flatnonzero(has_br)
    b_session = session[br_rows]
    change = np.zeros(br_rows.size, bool)
    change[1:] = (b_session[1:] == b_session[:-1]) & \
        (br[br_rows[1:]] != br[br_rows[:-1]])
    switches = np.bincount(b_session, change, m)
    msd_rows = np.flatnonzero(~np.isnan(msd))
    start = np.full(m, np.nan)
    firsts = msd_rows[np.unique(session[msd_rows], return_index=True)[1]]
    start[session[firsts]] = msd[firsts]
    total = rebuffer_ms + playing_ms
    with np.errstate(invalid='ignore', divide='ignore'):
        ratio = np.where(total > 0, rebuffer_ms / total, np.nan)
        avg = np.where(weight_ms > 0, weighted / weight_ms, np.nan)
    result = pa.table({
        'session_id': sid.take(pa.array(first_row)),
        'session_start': ts[first_row],
        'report_count': np.bincount(session, minlength=m),
        'video_start_time_ms': start,
        'rebuffer_count': rebuffer_count.astype(np.int64),
        'rebuffer_ms': rebuffer_ms.astype(np.int64),
        'playing_ms': playing_ms.astype(np.int64),
        'rebuffering_ratio': ratio,
        'error_count': np.bincount(session, err, m).astype(np.int64),
        'failed': failed,
        'exit_before_video_start': ~played & ~failed,
        'bitrate_switches': switches.astype(np.int64),
        'avg_bitrate_kbps': avg,
    })
    pq.write_table(result, out)
    return {'events': n}


FIELDS = ('report_count', 'video_start_time_ms', 'rebuffer_count',
          'rebuffer_ms', 'playing_ms', 'rebuffering_ratio', 'error_count',
          'failed', 'exit_before_video_start', 'bitrate_switches',
          'avg_bitrate_kbps')


def check(path, beam_out, reference_out):
    got = ds.dataset(f'{beam_out}/sessions').to_table().to_pandas()
    got = got.loc[got.groupby(['session_id', 'window_start'])['pane_index']
                  .idxmax()]
    got['start'] = got.session_start.dt.as_unit('ms').astype('int64')
    got = got.set_index(['session_id', 'start']).sort_index()
    ref = pq.read_table(reference_out).to_pandas()
    ref = ref.set_index(['session_id', 'session_start']).sort_index()
    assert list(got.index) == list(ref.index), 'different sessions'
    for field in FIELDS:
        ours = got[field].astype('float64').to_numpy()
        theirs = ref[field].astype('float64').to_numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-9,
                                   err_msg=field)
    return {'groups': len(got)}


RUNS = {'beam': beam_run, 'pyarrow': pyarrow_run}

if __name__ == '__main__' and len(sys.argv) > 2 and sys.argv[1] == '--child':
    common.child_main(RUNS)
