"""Output folders for the run-report tests: small real runs of the logs and
trades jobs, and hand-made tables with the columns of the video_qoe and
sensors jobs (whose sections are written against those names)."""
import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import logs, run, trades

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
MINUTE = datetime.timedelta(minutes=1)


def run_small_jobs(root):
    """Streaming runs (EARLY, ON_TIME and LATE panes all occur); returns
    {job: summary returned by run.run}."""
    summaries = {}
    for module, events in ((logs, 3000), (trades, 2000)):
        job = module.OPTIONS.JOB
        summaries[job] = run.run(module, [
            '--streaming', '--source',
            f'synthetic://{job}?events={events}&seed=7',
            '--sink', f'parquet://{root / job}', '--no-summary',
            '--no-progress'])
    return summaries


def write_table(folder, table, rows, schema=None):
    """rows: {column: list} -> folder/table/part.parquet (pane folders as a
    job writes them are not needed: the report reads every file below)."""
    target = folder / table / 'unwindowed'
    target.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=schema), target / f'{table}.parquet')


def _panes(n_windows, keys):
    """(key, window index, timing, index) for every key and window: an EARLY
    and an ON_TIME pane, and a LATE one for every third window."""
    for key in keys:
        for w in range(n_windows):
            timings = ['EARLY', 'ON_TIME'] + (['LATE'] if w % 3 == 0 else [])
            for index, timing in enumerate(timings):
                yield key, w, timing, index


def _dead_letters(folder, job, count):
    write_table(folder, 'dead_letter', {
        'raw': [f'bad line {i} from 10.1.2.{i} user{i}@example.com'.encode()
                for i in range(count)],
        'stage': [f'decode.{job}'] * count,
        'reason': [f'missing field {"abc"[i % 3]}' for i in range(count)],
        'error_time': [T0] * count,
        'source': [f'file://{job}.log'] * count,
    })


def _summary(folder, job, rows_written, dead):
    counted = {'read': 1000 + dead, 'decoded': 1000, 'dead_letters': dead,
               'assigned': 1000, 'aggregated': 990, 'late_accepted': 12,
               'panes.EARLY': 40, 'panes.ON_TIME': 20, 'panes.LATE': 7}
    counted.update({f'rows_written.{t}': n for t, n in rows_written.items()})
    args = type('Args', (), {'source': f'file://{job}.log',
                             'sink': f'parquet://{folder}',
                             'dead_letter': None, 'window': 'fixed:60s',
                             'trigger': 'early=10s,late=1'})()
    run.write_summary(str(folder / run.SUMMARY_FILE), job, args, counted,
                      run.summarize(counted), 1.0)


def video_qoe_tables(folder, drop=(), rename=None):
    """The video_qoe tables: sessions, qoe_rollups, alerts, dead_letter."""
    rng = np.random.default_rng(3)
    rename = rename or {}
    dims = [('cdn', 'akamai'), ('cdn', 'fastly'), ('stream_type', 'live')]
    rollups = {k: [] for k in (
        'window_start', 'window_end', 'pane_timing', 'pane_index',
        'dimension', 'dimension_value', 'active_sessions', 'plays',
        'video_start_time_p50_ms', 'video_start_time_p95_ms', 'rebuffer_ms',
        'playing_ms', 'rebuffering_ratio', 'errors', 'failures', 'exits')}
    for (dim, value), w, timing, index in _panes(8, dims):
        p50 = float(rng.uniform(400, 900))
        rollups['window_start'].append(T0 + w * MINUTE)
        rollups['window_end'].append(T0 + (w + 1) * MINUTE)
        rollups['pane_timing'].append(timing)
        rollups['pane_index'].append(index)
        rollups['dimension'].append(dim)
        rollups['dimension_value'].append(value)
        rollups['active_sessions'].append(int(rng.integers(20, 60)))
        rollups['plays'].append(int(rng.integers(10, 40)) + index)
        rollups['video_start_time_p50_ms'].append(p50)
        rollups['video_start_time_p95_ms'].append(p50 * 2.5)
        rollups['rebuffer_ms'].append(float(rng.uniform(0, 4000)))
        rollups['playing_ms'].append(float(rng.uniform(50000, 90000)))
        rollups['rebuffering_ratio'].append(float(rng.uniform(0, 0.08)))
        rollups['errors'].append(int(rng.integers(0, 3)))
        rollups['failures'].append(int(rng.integers(0, 2)))
        rollups['exits'].append(int(rng.integers(0, 2)))
    n = 200
    sessions = {
        'session_id': [f's{i:04d}' for i in range(n)],
        'content_id': [f'c{i % 7}' for i in range(n)],
        'cdn': [('akamai', 'fastly')[i % 2] for i in range(n)],
        'stream_type': [('vod', 'live')[i % 2] for i in range(n)],
        'streaming_format': ['hls'] * n,
        'start': [T0 + i * datetime.timedelta(seconds=2) for i in range(n)],
        'end': [T0 + i * datetime.timedelta(seconds=2) + 3 * MINUTE
                for i in range(n)],
        'video_start_time_ms': rng.gamma(4, 200, n).tolist(),
        'rebuffer_count': rng.poisson(1, n).tolist(),
        'rebuffer_ms': rng.exponential(1500, n).tolist(),
        'playing_ms': rng.uniform(30000, 180000, n).tolist(),
        'rebuffering_ratio': rng.beta(1, 30, n).tolist(),
        'error_count': rng.poisson(0.1, n).tolist(),
        'failed': (rng.uniform(size=n) < 0.03).tolist(),
        'exit_before_video_start': (rng.uniform(size=n) < 0.02).tolist(),
        'bitrate_switches': rng.poisson(2, n).tolist(),
        'avg_bitrate_kbps': rng.normal(3500, 800, n).tolist(),
        'report_count': rng.integers(1, 30, n).tolist(),
        'window_start': [T0] * n, 'window_end': [T0 + 10 * MINUTE] * n,
        'pane_timing': ['ON_TIME'] * n, 'pane_index': [0] * n,
    }
    alerts = {
        'key': ['cdn=fastly', 'cdn=fastly'],
        'metric': ['rebuffering_ratio', 'rebuffering_ratio'],
        'state': ['RAISED', 'RECOVERED'], 'value': [0.09, 0.01],
        'threshold': [0.05, 0.04],
        'window_start': [T0 + 2 * MINUTE, T0 + 5 * MINUTE],
        'window_end': [T0 + 3 * MINUTE, T0 + 6 * MINUTE],
        'pane_timing': ['ON_TIME'] * 2, 'pane_index': [1, 1],
    }
    tables = {'sessions': sessions, 'qoe_rollups': rollups, 'alerts': alerts}
    for table, rows in tables.items():
        rows = {rename.get(k, k): v for k, v in rows.items()
                if k not in drop}
        write_table(folder, table, rows)
    _dead_letters(folder, 'video_qoe', 9)
    _summary(folder, 'video_qoe', {'sessions': n, 'qoe_rollups': len(
        rollups['plays']), 'alerts': 2, 'dead_letter': 9}, 9)
    return tables


def sensors_tables(folder, rename=None):
    """The sensors tables: stats, anomalies, dead_letter."""
    rng = np.random.default_rng(5)
    series = [('s1', 'temperature'), ('s2', 'temperature'), ('s3', 'humidity')]
    stats = {k: [] for k in (
        'sensor_id', 'metric', 'window_start', 'window_end', 'pane_timing',
        'pane_index', 'count', 'mean', 'min', 'max', 'stddev', 'p50', 'p95',
        'slope', 'intercept', 'calibration_version', 'uncalibrated_count')}
    for (sensor, metric), w, timing, index in _panes(10, series):
        mean = 20 + w * 0.3 + float(rng.normal(0, 0.2))
        stats['sensor_id'].append(sensor)
        stats['metric'].append(metric)
        stats['window_start'].append(T0 + w * MINUTE)
        stats['window_end'].append(T0 + (w + 1) * MINUTE)
        stats['pane_timing'].append(timing)
        stats['pane_index'].append(index)
        stats['count'].append(30 + index)
        stats['mean'].append(mean)
        stats['min'].append(mean - 1.5)
        stats['max'].append(mean + 1.5)
        stats['stddev'].append(0.6)
        stats['p50'].append(mean)
        stats['p95'].append(mean + 1.2)
        stats['slope'].append(0.005)
        stats['intercept'].append(mean - 0.15)
        stats['calibration_version'].append(1)
        stats['uncalibrated_count'].append(0)
    anomalies = {
        'sensor_id': ['s1', 's3'], 'metric': ['temperature', 'humidity'],
        'kind': ['spike', 'flatline'],
        'start': [T0 + 3 * MINUTE, T0 + 6 * MINUTE],
        'end': [T0 + 4 * MINUTE, T0 + 8 * MINUTE],
        'peak_value': [31.0, 22.1], 'severity': ['critical', 'warning'],
        'reading_count': [12, 40],
    }
    write_table(folder, 'stats', stats)
    write_table(folder, 'anomalies', {(rename or {}).get(k, k): v
                                      for k, v in anomalies.items()})
    _dead_letters(folder, 'sensors', 5)
    _summary(folder, 'sensors', {'stats': len(stats['count']),
                                 'anomalies': 2, 'dead_letter': 5}, 5)
    return {'stats': stats, 'anomalies': anomalies}
