"""Benchmark of the sensors job's replay path (calibration included) against
plain pyarrow/numpy computing the same statistics.

Beam: ``python -m pipelines sensors --source file://INPUT --calibration CAL
--sink parquet://OUT --window fixed:60s --trigger default --anomalies off
--runner FnApiRunner --direct_num_workers 1`` (columnar path).  Reference:
pyarrow reads the same JSON lines, numpy calibrates each reading with the
row in force at its time, and one Arrow group-by per (sensor, metric,
window) gives count, mean, min, max, stddev, approximate p50/p95 (t-digest)
and the least-squares slope from centred sums.  ``--anomalies on`` (the
detector, one Python step per reading) is reported apart by ``detector``.
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
from pipelines import run, sensors  # noqa: E402
from transforms.sensors import calibration  # noqa: E402
from transforms.synthetic import sensors as synthetic  # noqa: E402

WINDOW_US = 60_000_000
CALIBRATION = 'sensor_id,metric,a,b,valid_from\n' + ''.join(
    f'S{i:03d},{"temperature" if i % 2 == 0 else "pressure"},'
    f'{1.0 + i / 100},{i / 10},2026-01-01T00:00:00Z\n'
    f'S{i:03d},{"temperature" if i % 2 == 0 else "pressure"},'
    f'{1.0 - i / 200},{-i / 10},2026-01-01T06:00:00Z\n' for i in range(40))


def make_input(n: int, seed: int = 5):
    """n readings of 50 sensors (40 calibrated), clean JSON lines."""
    path = common.OUT / f'sensors-{n}-{seed}.jsonl'
    common.OUT.mkdir(parents=True, exist_ok=True)
    cal = calibration_path()
    if not cal.exists():
        cal.write_text(CALIBRATION)
    if path.exists():
        return path
    params = {k: v[1] for k, v in synthetic.PARAMS.items()}
    params.update(events=n, seed=seed, sensors=50, interval=1.0,
                  malformed=0.0, late=0.0, duplicates=0.0)
    # The generator streams: a chunk of lines in memory at a time.
    return common.write_lines(path, synthetic.generate(params).payloads())


def calibration_path():
    return common.OUT / 'sensors-calibration.csv'


def beam_run(path, out, execution='columnar'):
    summary = run.run(sensors, [
        '--source', f'file://{path}', '--sink', f'parquet://{out}',
        '--calibration', str(calibration_path()), '--window', 'fixed:60s',
        '--runner', 'FnApiRunner', '--direct_num_workers', '1',
        '--trigger', 'default', '--anomalies', 'off',
        '--execution', execution, '--no-summary'])
    return {'events': summary['read'], 'decoded': summary['decoded'],
            'balanced': summary['balanced']}


def pyarrow_run(path, out):
    table = pajson.read_json(path)
    n = table.num_rows
    event = table['event_time'].cast(pa.timestamp('us', tz='UTC')).cast(
        pa.int64()).to_numpy()
    # The names stay Arrow columns: no Python string per reading.
    sensor = table['sensor_id']
    metric = table['metric']
    raw = table['value'].to_numpy(zero_copy_only=False).astype(np.float64)
    cal = calibration.load_table(str(calibration_path()))
    value = raw.copy()
    keys = pa.table({'s': sensor, 'm': metric,
                     'i': np.arange(n)}).group_by(['s', 'm']).aggregate(
                         [('i', 'list')])
    for s, m, rows in zip(keys['s'].to_pylist(), keys['m'].to_pylist(),
                          keys['i_list'].to_numpy(zero_copy_only=False)):
        entries = cal.rows_of(s, m)
        if entries:
            valid = np.array([e[0] for e in entries])
            k = np.searchsorted(valid, event[rows], side='right') - 1
            has = k >= 0
            a = np.array([e[1] for e in entries])
            b = np.array([e[2] for e in entries])
            value[rows[has]] = a[k[has]] * raw[rows[has]] + b[k[has]]
    window = event - event % WINDOW_US
    t = (event - window) / 1e6
    base = pa.table({'sensor': sensor, 'metric': metric, 'window': window,
                     'value': value, 't': t})
    first = base.group_by(['sensor', 'metric', 'window'],
                          use_threads=False).aggregate([
        ('value', 'count'), ('value', 'mean'), ('value', 'min'),
        ('value', 'max'), ('value', 'stddev', pc.VarianceOptions(ddof=1)),
        ('value', 'tdigest', pc.TDigestOptions(q=[0.5, 0.95])),
        ('t', 'mean')])
    joined = base.join(first.select(['sensor', 'metric', 'window',
                                     'value_mean', 't_mean']),
                       ['sensor', 'metric', 'window'])
    dt = pc.subtract(joined['t'], joined['t_mean'])
    dy = pc.subtract(joined['value'], joined['value_mean'])
    sums = pa.table({'sensor': joined['sensor'], 'metric': joined['metric'],
                     'window': joined['window'],
                     'stt': pc.multiply(dt, dt), 'sty': pc.multiply(dt, dy)})
    sums = sums.group_by(['sensor', 'metric', 'window'],
                         use_threads=False).aggregate([('stt', 'sum'),
                                                       ('sty', 'sum')])
    result = first.drop_columns(['value_tdigest']).join(
        sums, ['sensor', 'metric', 'window'])
    result = result.append_column('slope', pc.divide(
        result['sty_sum'], result['stt_sum']))
    pq.write_table(result, out)
    return {'events': n}


def check(path, beam_out, reference_out):
    got = ds.dataset(f'{beam_out}/stats').to_table().to_pandas()
    got['window'] = got.window_start.dt.as_unit('us').astype('int64')
    got = got.set_index(['sensor_id', 'metric', 'window']).sort_index()
    ref = pq.read_table(reference_out).to_pandas()
    ref = ref.set_index(['sensor', 'metric', 'window']).sort_index()
    assert list(got.index) == list(ref.index), 'different windows'
    assert (got['count'].values == ref.value_count.values).all()
    for ours, theirs in (('mean', 'value_mean'), ('min', 'value_min'),
                         ('max', 'value_max'), ('stddev', 'value_stddev'),
                         ('slope', 'slope')):
        np.testing.assert_allclose(got[ours].values, ref[theirs].values,
                                   rtol=1e-6, atol=1e-9, err_msg=ours)
    return {'groups': len(got)}


RUNS = {'beam': beam_run, 'pyarrow': pyarrow_run}

if __name__ == '__main__' and len(sys.argv) > 2 and sys.argv[1] == '--child':
    common.child_main(RUNS)
