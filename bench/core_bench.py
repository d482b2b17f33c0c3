"""Benchmark of the generic parse -> window -> aggregate core.

Input: JSON lines ``{"ts": RFC 3339, "key": one of 100, "value": number}``.
Beam: file blocks -> columnar decode (transforms.keyed) -> fixed 60 s windows
-> per key count/mean/min/max/stddev -> Parquet, on the in-process portable
runner with one worker.  Reference: pyarrow reads the same lines and groups
by (key, window).  Both must agree.
"""
import datetime
import os
import sys

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.json as pajson
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Imported before anything is measured, like pyarrow for the reference.
import apache_beam as beam  # noqa: E402  pylint: disable=wrong-import-position
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from bench import common  # noqa: E402  pylint: disable=wrong-import-position
from pipelines import run as job_run  # noqa: E402
from transforms import deadletter, io, keyed, windows  # noqa: E402
from transforms.aggregate import AggregatePerKey  # noqa: E402
from transforms.columnar import PartialsFn  # noqa: E402

WINDOW_US = 60_000_000
JOB = 'core'


def make_input(n: int, seed: int = 3):
    path = common.OUT / f'core-{n}-{seed}.jsonl'
    if path.exists():
        return path
    common.OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix('.tmp')
    with open(tmp, 'wb') as f:
        for lo in range(0, n, 100_000):
            m = min(100_000, n - lo)
            t = common.T0 + (lo + np.arange(m)) / 1000.0
            keys = rng.integers(0, 100, m)
            values = np.round(rng.normal(100, 15, m), 4)
            # One buffer per chunk: orjson's bytes keep a 4 KiB buffer each.
            lines = bytearray()
            for i in range(m):
                lines += orjson.dumps({
                    'ts': datetime.datetime.fromtimestamp(
                        t[i], tz=datetime.timezone.utc).isoformat(
                            timespec='milliseconds').replace('+00:00', 'Z'),
                    'key': f'k{keys[i]:03d}', 'value': float(values[i])})
                lines += b'\n'
            f.write(lines)
    os.replace(tmp, path)
    return path


def beam_run(path, out, execution='columnar'):
    window = windows.parse_window('fixed:60s')
    trigger = windows.parse_trigger('default')
    context = io.Context(JOB, streaming=False)
    source = io.open_source(f'file://{path}', context)
    sink = io.open_sink(f'parquet://{out}', context)
    pipeline = beam.Pipeline(options=PipelineOptions(
        runner='FnApiRunner', direct_num_workers=1))
    if execution == 'columnar':
        decoded = (pipeline | 'Read' >> source.blocks()
                   | 'DecodePartials' >> beam.ParDo(PartialsFn(
                       keyed.BlockDecoder(), keyed.KeyedPartials(window), JOB,
                       window_in_key=True))
                   .with_outputs(deadletter.DEAD, main=deadletter.OK))
        kvs = decoded.ok
    else:
        from transforms.decode import Decode   # pylint: disable=import-outside-toplevel
        decoded = (pipeline | 'Read' >> source
                   | 'Decode' >> Decode(keyed.decode_keyed_value, 'decode', JOB))
        kvs = (decoded.ok | 'Key' >> beam.Map(lambda r: (r.key, r))
               | 'Window' >> windows.ApplyWindow(window, trigger))
    stats = kvs | 'Stats' >> AggregatePerKey(
        keyed.KeyedMomentsFn(), keyed.to_keyed_stats, keyed.moments_count,
        trigger.accumulates_panes, JOB,
        window_in_key=execution == 'columnar')
    stats | 'Write' >> sink.write('keyed_stats', keyed.KeyedStats)
    decoded.dead | 'WriteDead' >> sink.write('dead_letter',
                                             deadletter.DeadLetter)
    result = pipeline.run()
    result.wait_until_finish()
    summary = job_run.summarize(job_run.counters(result, JOB))
    return {'events': summary['read'], 'decoded': summary['decoded'],
            'balanced': summary['balanced']}


def pyarrow_run(path, out):
    table = pajson.read_json(path)
    event_us = table['ts'].cast(pa.timestamp('us', tz='UTC')).cast(pa.int64())
    window = pc.subtract(event_us, pc.subtract(
        event_us, pc.multiply(pc.divide(event_us, WINDOW_US), WINDOW_US)))
    stats = pa.table({'key': table['key'], 'window': window,
                      'value': table['value']}).group_by(
        ['key', 'window']).aggregate([
            ('value', 'count'), ('value', 'mean'), ('value', 'min'),
            ('value', 'max'),
            ('value', 'stddev', pc.VarianceOptions(ddof=1))])
    pq.write_table(stats, out)
    return {'events': table.num_rows}


def check(path, beam_out, reference_out):
    got = ds.dataset(f'{beam_out}/keyed_stats').to_table().to_pandas()
    got['window'] = got.window_start.dt.as_unit('us').astype('int64')
    got = got.set_index(['key', 'window']).sort_index()
    ref = pq.read_table(reference_out).to_pandas()
    ref = ref.set_index(['key', 'window']).sort_index()
    assert list(got.index) == list(ref.index), 'different groups'
    assert (got['count'].values == ref['value_count'].values).all()
    for ours, theirs in (('mean', 'value_mean'), ('min', 'value_min'),
                         ('max', 'value_max'), ('stddev', 'value_stddev')):
        np.testing.assert_allclose(got[ours].values, ref[theirs].values,
                                   rtol=1e-9, err_msg=ours)
    return {'groups': len(got)}


RUNS = {'beam': beam_run, 'pyarrow': pyarrow_run}

if __name__ == '__main__' and len(sys.argv) > 2 and sys.argv[1] == '--child':
    common.child_main(RUNS)
