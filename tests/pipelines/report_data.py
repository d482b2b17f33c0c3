"""Output folders for the run-report tests: small real runs of every job
(logs with its template tables, trades, video_qoe, sensors), and hand-made
tables built from the jobs' own record types (``Rollup``, ``Session``,
``Alert``, ``SensorStats``, ``Incident``, ``DeadLetter``), so that a renamed
or retyped field breaks these tests as it would break the report."""
import datetime

import numpy as np
import pyarrow.parquet as pq
from apache_beam.utils.timestamp import Timestamp

from pipelines import logs, run, sensors, trades, video_qoe
from transforms import schemas
from transforms.deadletter import DeadLetter
from transforms.detectors import Alert
from transforms.sensors.records import Incident, SensorStats
from transforms.video.rollups import Rollup, rollup_key
from transforms.video.sessions import Session

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
MINUTE = 60

# (job module, source, streaming, extra options).  The streaming runs give
# EARLY, ON_TIME and LATE panes; video_qoe and sensors run in batch (their
# streaming runs take tens of seconds), with few CDNs and contents so that
# every video series is drawn, and more spikes so that sensors has incidents.
SMALL_RUNS = (
    (logs, 'synthetic://logs?events=3000&seed=7', True,
     ['--templates', 'on']),
    (trades, 'synthetic://trades?events=2000&seed=7', True, []),
    (video_qoe, 'synthetic://video?sessions=60&contents=2&cdns=2&seed=7',
     False, []),
    (sensors, 'synthetic://sensors?sensors=4&events=1500&spikes=0.01&seed=7',
     False, []),
)


def run_small_jobs(root):
    """Returns {job: summary returned by run.run}."""
    summaries = {}
    for module, source, streaming, extra in SMALL_RUNS:
        job = module.OPTIONS.JOB
        summaries[job] = run.run(module, (['--streaming'] if streaming else [])
                                 + ['--source', source,
                                    '--sink', f'parquet://{root / job}',
                                    '--no-summary', '--no-progress'] + extra)
    return summaries


def _ts(when):
    """A datetime, or minutes after T0 -> a Beam Timestamp."""
    if not isinstance(when, datetime.datetime):
        when = T0 + datetime.timedelta(minutes=when)
    return Timestamp.from_utc_datetime(when)


def write_table(folder, table, records, record_type, drop=(), rename=None):
    """records (of ``record_type``) -> folder/table/part.parquet with the
    job's Arrow schema, less ``drop``, with columns renamed by ``rename``
    (pane folders as a job writes them are not needed: the report reads
    every file below)."""
    arrow = schemas.to_arrow(records, record_type)
    arrow = arrow.drop_columns([c for c in drop if c in arrow.column_names])
    arrow = arrow.rename_columns([(rename or {}).get(c, c)
                                  for c in arrow.column_names])
    target = folder / table / 'unwindowed'
    target.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow, target / f'{table}.parquet')
    return records


def _panes(n_windows, keys):
    """(key, window index, pane fields) for every key and window: an EARLY
    and an ON_TIME pane, and a LATE one for every third window."""
    for key in keys:
        for w in range(n_windows):
            timings = ['EARLY', 'ON_TIME'] + (['LATE'] if w % 3 == 0 else [])
            for index, timing in enumerate(timings):
                yield key, w, index, {
                    'window_start': _ts(w), 'window_end': _ts(w + 1),
                    'pane_timing': timing, 'pane_index': index}


def _dead_letters(folder, job, count):
    return write_table(folder, 'dead_letter', [DeadLetter(
        raw=f'bad line {i} from 10.1.2.{i} user{i}@example.com'.encode(),
        stage=f'decode.{job}', reason=f'missing field {"abc"[i % 3]}',
        error_time=_ts(0), source=f'file://{job}.log') for i in range(count)],
        DeadLetter)


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
    """The video_qoe tables (sessions, qoe_rollups, alerts, dead_letter) with
    EARLY, ON_TIME and LATE panes; ``drop`` and ``rename`` apply to every
    table.  Returns {table: [records]}."""
    rng = np.random.default_rng(3)
    dims = [('all', 'all'), ('cdn', 'akamai'), ('cdn', 'fastly'),
            ('stream_type', 'l')]
    rollups = []
    for (dim, value), _, index, pane in _panes(8, dims):
        p50 = float(rng.uniform(400, 900))
        rollups.append(Rollup(
            dimension=dim, value=value, count=int(rng.integers(50, 90)),
            active_sessions=int(rng.integers(20, 60)),
            plays=int(rng.integers(10, 40)) + index,
            video_start_time_p50_ms=p50, video_start_time_p95_ms=p50 * 2.5,
            rebuffer_ms=int(rng.integers(0, 4000)),
            playing_ms=int(rng.integers(50000, 90000)),
            rebuffering_ratio=float(rng.uniform(0, 0.08)),
            errors=int(rng.integers(0, 3)), failures=int(rng.integers(0, 2)),
            exits_before_video_start=int(rng.integers(0, 2)), **pane))
    n = 200
    sessions = [Session(
        session_id=f's{i:04d}', content_id=f'c{i % 7}',
        cdn=('akamai', 'fastly')[i % 2], stream_type=('v', 'l')[i % 2],
        streaming_format='h',
        session_start=_ts(T0 + datetime.timedelta(seconds=2 * i)),
        session_end=_ts(T0 + datetime.timedelta(seconds=2 * i + 180)),
        report_count=int(rng.integers(1, 30)),
        video_start_time_ms=int(rng.gamma(4, 200)),
        rebuffer_count=int(rng.poisson(1)),
        rebuffer_ms=int(rng.exponential(1500)),
        playing_ms=int(rng.uniform(30000, 180000)),
        rebuffering_ratio=float(rng.beta(1, 30)),
        error_count=int(rng.poisson(0.1)),
        failed=bool(rng.uniform() < 0.03),
        exit_before_video_start=bool(rng.uniform() < 0.02),
        bitrate_switches=int(rng.poisson(2)),
        avg_bitrate_kbps=float(rng.normal(3500, 800)),
        window_start=_ts(0), window_end=_ts(10), pane_timing='ON_TIME',
        pane_index=0) for i in range(n)]
    key = rollup_key(next(r for r in rollups if r.value == 'fastly'))
    alerts = [Alert(key=key, metric='rebuffering_ratio', state=state,
                    value=value, threshold=threshold, window_start=_ts(w),
                    window_end=_ts(w + 1), pane_timing='ON_TIME',
                    pane_index=1)
              for state, value, threshold, w in (('RAISED', 0.09, 0.05, 2),
                                                 ('RECOVERED', 0.01, 0.04, 5))]
    tables = {'sessions': (sessions, Session),
              'qoe_rollups': (rollups, Rollup), 'alerts': (alerts, Alert)}
    for table, (records, record_type) in tables.items():
        write_table(folder, table, records, record_type, drop, rename)
    _dead_letters(folder, 'video_qoe', 9)
    _summary(folder, 'video_qoe', {'sessions': n, 'qoe_rollups': len(
        rollups), 'alerts': len(alerts), 'dead_letter': 9}, 9)
    return {table: records for table, (records, _) in tables.items()}


def sensors_tables(folder, rename=None):
    """The sensors tables (stats, anomalies, dead_letter) with EARLY,
    ON_TIME and LATE panes; ``rename`` applies to anomalies.  Returns
    {table: [records]}."""
    rng = np.random.default_rng(5)
    series = [('s1', 'temperature'), ('s2', 'temperature'), ('s3', 'humidity')]
    stats = []
    for (sensor, metric), w, index, pane in _panes(10, series):
        mean = 20 + w * 0.3 + float(rng.normal(0, 0.2))
        stats.append(SensorStats(
            sensor_id=sensor, metric=metric, count=30 + index, mean=mean,
            min=mean - 1.5, max=mean + 1.5, stddev=0.6, p50=mean,
            p95=mean + 1.2, slope=0.005, intercept=mean - 0.15,
            calibration_version='v1', uncalibrated_count=0, **pane))
    anomalies = [
        Incident(sensor_id='s1', metric='temperature', kind='spike',
                 start=_ts(3), end=_ts(4), peak_value=31.0, severity=6.2,
                 reading_count=12, state='CLOSED', calibration_version='v1'),
        Incident(sensor_id='s3', metric='humidity', kind='stuck',
                 start=_ts(6), end=_ts(8), peak_value=22.1, severity=40.0,
                 reading_count=40, state='OPEN', calibration_version='v1'),
    ]
    write_table(folder, 'stats', stats, SensorStats)
    write_table(folder, 'anomalies', anomalies, Incident, rename=rename)
    _dead_letters(folder, 'sensors', 5)
    _summary(folder, 'sensors', {'stats': len(stats),
                                 'anomalies': len(anomalies),
                                 'dead_letter': 5}, 5)
    return {'stats': stats, 'anomalies': anomalies}
