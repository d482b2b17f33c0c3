"""Benchmark of the trades job's replay path against plain pyarrow.

Beam: ``python -m pipelines trades --source file://INPUT --sink parquet://OUT
--runner FnApiRunner --direct_num_workers 1 --trigger default`` (columnar
fast path by default: bars and price anomalies from partials).  Reference: pyarrow reads the same JSON lines, drops
repeated trade ids and computes the same bars (open/close by event time and
trade id over eligible trades, high, low, volume, VWAP, count).
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
from pipelines import run, trades  # noqa: E402
from transforms.synthetic import trades as synthetic  # noqa: E402

WINDOW_US = 60_000_000
INELIGIBLE = ['T', 'Z']


def make_input(n: int, seed: int = 5):
    """n trades (4 symbols, 1% re-sent, conditions, no malformed lines)."""
    path = common.OUT / f'trades-{n}-{seed}.jsonl'
    if path.exists():
        return path
    common.OUT.mkdir(parents=True, exist_ok=True)
    params = {k: v[1] for k, v in synthetic.PARAMS.items()}
    params.update(events=n, seed=seed, rate=200.0, malformed=0.0, late=0.0)
    # The generator streams: a chunk of lines in memory at a time.
    return common.write_lines(path, synthetic.generate(params).payloads())


def beam_run(path, out, execution='columnar'):
    summary = run.run(trades, [
        '--source', f'file://{path}', '--sink', f'parquet://{out}',
        '--runner', 'FnApiRunner', '--direct_num_workers', '1',
        '--trigger', 'default', '--execution', execution, '--no-summary',
        '--no-progress'])
    return {'events': summary['read'], 'decoded': summary['decoded'],
            'balanced': summary['balanced']}


def pyarrow_run(path, out):
    table = pajson.read_json(path)
    n = table.num_rows
    event = table['event_time'].cast(pa.timestamp('us', tz='UTC')).cast(
        pa.int64()).to_numpy()
    lists = table['conditions'].combine_chunks()
    codes = pc.list_flatten(lists)
    eligible = np.ones(n, bool)
    hit = pc.is_in(codes, pa.array(INELIGIBLE)).to_numpy(zero_copy_only=False)
    eligible[np.unique(pc.list_parent_indices(lists).to_numpy()[hit])] = False
    t = pa.table({'symbol': table['symbol'], 'window': event - event % WINDOW_US,
                  'event': event, 'key': pc.fill_null(table['trade_id'], ''),
                  'price': table['price'], 'size': table['size'],
                  'eligible': eligible, 'row': np.arange(n)})
    # A repeated trade id counts once (trades without an id all count).
    has_id = table['trade_id'].is_valid().to_numpy(zero_copy_only=False)
    first = t.filter(pa.array(has_id)).group_by(['symbol', 'key']).aggregate(
        [('row', 'min')])
    keep = ~has_id
    keep[first['row_min'].to_numpy()] = True
    t = t.filter(pa.array(keep))
    t = t.append_column('notional', pc.multiply(t['price'], t['size']))
    sums = t.group_by(['symbol', 'window']).aggregate([
        ('size', 'sum'), ('notional', 'sum'), ('price', 'count')])
    e = t.filter(t['eligible'])
    e = e.take(pc.sort_indices(e, sort_keys=[
        ('symbol', 'ascending'), ('window', 'ascending'),
        ('event', 'ascending'), ('key', 'ascending')]))
    ohlc = e.group_by(['symbol', 'window'], use_threads=False).aggregate([
        ('price', 'first'), ('price', 'last'), ('price', 'max'),
        ('price', 'min')])
    result = sums.join(ohlc, ['symbol', 'window'], join_type='left outer')
    pq.write_table(result, out)
    return {'events': n}


def check(path, beam_out, reference_out):
    got = ds.dataset(f'{beam_out}/bars').to_table().to_pandas()
    # the final pane of each bar (a streaming run writes several)
    got = got.sort_values('pane_index', kind='stable').groupby(
        ['symbol', 'window_start']).tail(1)
    got['window'] = got.window_start.dt.as_unit('us').astype('int64')
    got = got.set_index(['symbol', 'window']).sort_index()
    ref = pq.read_table(reference_out).to_pandas()
    ref = ref.set_index(['symbol', 'window']).sort_index()
    assert list(got.index) == list(ref.index), 'different bars'
    assert (got.trade_count.values == ref.price_count.values).all()
    for ours, theirs in (('open', 'price_first'), ('close', 'price_last'),
                         ('high', 'price_max'), ('low', 'price_min')):
        assert np.array_equal(got[ours].values, ref[theirs].values,
                              equal_nan=True), ours
    np.testing.assert_allclose(got.volume.values, ref.size_sum.values,
                               rtol=1e-12)
    np.testing.assert_allclose(got.vwap.values,
                               (ref.notional_sum / ref.size_sum).values,
                               rtol=1e-9)
    return {'groups': len(got)}


RUNS = {'beam': beam_run, 'pyarrow': pyarrow_run}

if __name__ == '__main__' and len(sys.argv) > 2 and sys.argv[1] == '--child':
    common.child_main(RUNS)
