"""Benchmark of the logs job's replay path against plain pyarrow.

Beam: ``python -m pipelines logs --source file://INPUT --sink parquet://OUT
--runner FnApiRunner --direct_num_workers 1 --trigger default`` (the
in-process portable runner: the SDK harness Dataflow and Flink workers run),
columnar fast path by default.  Reference: pyarrow reads the same JSON lines
and computes the same per (service, 60 s window) figures: count, errors,
error rate, latency count/mean/min/max/stddev and t-digest p50/p95/p99.

Both results are compared (counts exactly, moments to 1e-9, the Beam
quantiles against the exact quantiles of the data within the KLL rank error).
"""
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.json as pajson
import pyarrow.parquet as pq

sys.path.insert(0, __import__('os').path.dirname(
    __import__('os').path.dirname(__import__('os').path.abspath(__file__))))

from bench import common  # noqa: E402  pylint: disable=wrong-import-position
# Imported before anything is measured, like pyarrow for the reference.
from pipelines import logs, run  # noqa: E402  pylint: disable=wrong-import-position

WINDOW_US = 60_000_000


def beam_run(path, out, execution='columnar', templates='off'):
    summary = run.run(logs, [
        '--source', f'file://{path}', '--sink', f'parquet://{out}',
        '--runner', 'FnApiRunner', '--direct_num_workers', '1',
        '--trigger', 'default', '--execution', execution,
        '--templates', templates, '--no-summary', '--no-progress'])
    return {'events': summary['read'], 'decoded': summary['decoded'],
            'dead': summary['dead_lettered'], 'balanced': summary['balanced']}


def pyarrow_run(path, out):
    table = pajson.read_json(path)
    event_us = table['timestamp'].cast(pa.timestamp('us', tz='UTC')).cast(
        pa.int64())
    window = pc.subtract(event_us, pc.subtract(
        event_us, pc.multiply(pc.divide(event_us, WINDOW_US), WINDOW_US)))
    error = pc.or_(pc.greater_equal(table['status'], 500),
                   pc.is_in(table['level'], pa.array(['ERROR', 'FATAL'])))
    stats = pa.table({'service': table['service'], 'window': window,
                      'error': error, 'latency': table['latency_ms']}) \
        .group_by(['service', 'window']).aggregate([
            ('error', 'count'), ('error', 'sum'), ('latency', 'count'),
            ('latency', 'mean'), ('latency', 'min'), ('latency', 'max'),
            ('latency', 'stddev', pc.VarianceOptions(ddof=1)),
            ('latency', 'tdigest', pc.TDigestOptions(q=[0.5, 0.95, 0.99]))])
    pq.write_table(stats, out)
    return {'events': table.num_rows}


def check(path, beam_out, reference_out):
    """Beam's final panes against the reference (and exact quantiles)."""
    from transforms.combiners import Quantiles   # pylint: disable=import-outside-toplevel
    got = ds.dataset(f'{beam_out}/service_stats').to_table().to_pandas()
    got = got.sort_values('pane_index').groupby(
        ['service', 'window_start']).tail(1)
    got['window'] = got.window_start.dt.as_unit('us').astype('int64')
    got = got.set_index(['service', 'window']).sort_index()
    ref = pq.read_table(reference_out).to_pandas()
    ref = ref.set_index(['service', 'window']).sort_index()
    assert list(got.index) == list(ref.index), 'different groups'
    assert (got['count'].values == ref['error_count'].values).all()
    assert (got['errors'].values == ref['error_sum'].values).all()
    for ours, theirs in (('latency_mean_ms', 'latency_mean'),
                         ('latency_min_ms', 'latency_min'),
                         ('latency_max_ms', 'latency_max'),
                         ('latency_stddev_ms', 'latency_stddev')):
        np.testing.assert_allclose(got[ours].values, ref[theirs].values,
                                   rtol=1e-9, err_msg=ours)
    # Quantiles: each Beam p99 against the exact ranks of the data.
    table = pajson.read_json(path)
    event_us = table['timestamp'].cast(pa.timestamp('us', tz='UTC')).cast(
        pa.int64()).to_numpy()
    frame = {'service': table['service'].to_numpy(zero_copy_only=False),
             'window': event_us - event_us % WINDOW_US,
             'latency': table['latency_ms'].to_numpy()}
    order = np.lexsort((frame['window'], frame['service']))
    eps = Quantiles.rank_error()
    worst = 0.0
    keys = list(zip(frame['service'][order], frame['window'][order]))
    values = frame['latency'][order]
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            group = np.sort(values[start:i])
            row = got.loc[keys[start]]
            for rank, column in ((0.5, 'latency_p50_ms'),
                                 (0.99, 'latency_p99_ms')):
                lo = np.searchsorted(group, row[column], 'left') / len(group)
                hi = np.searchsorted(group, row[column], 'right') / len(group)
                worst = max(worst, max(0.0, lo - rank, rank - hi))
            start = i
    assert worst <= eps, f'quantile rank error {worst} > {eps}'
    return {'groups': len(got), 'worst_rank_error': float(worst),
            'rank_error_bound': float(eps)}


def beam_templates_run(path, out):
    """The job with template mining (which runs the element path)."""
    return beam_run(path, out, 'element', 'on')


def check_templates(path, beam_out):
    """Every record is in exactly one templates row; the templates found."""
    rows = ds.dataset(f'{beam_out}/templates').to_table()
    events = pajson.read_json(path).num_rows
    counted = pc.sum(rows['count']).as_py()
    assert counted == events, f'{counted} records in templates, {events} read'
    return {'templates': len(set(rows['template_id'].to_pylist()))}


RUNS = {'beam': beam_run, 'beam_templates': beam_templates_run,
        'pyarrow': pyarrow_run}

if __name__ == '__main__' and len(sys.argv) > 2 and sys.argv[1] == '--child':
    common.child_main(RUNS)
