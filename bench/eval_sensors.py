"""``make eval-sensors``: the sensors job's detector scored on NAB.

The seven ``realKnownCause`` series of the Numenta Anomaly Benchmark (read
from ``../shared/nab/``, never copied) are replayed through the sensors job
itself (``python -m pipelines sensors`` over a file of readings, one sensor
per series, batch replay in event-time order), with one configuration for
every series: the job's spike defaults, stuck and silence detection off (NAB
labels process anomalies; its series have sampling gaps that are not
failures).  The start of every incident the job reports is a detection; they
are scored with NAB's standard profile (:mod:`bench.nab`) and written to
``output/eval-sensors/detections.csv`` (``file,timestamp``, timestamps as in
the series).

    python bench/eval_sensors.py [--nab DIR] [--out DIR] [JOB OPTIONS...]

Extra arguments are passed to the job (e.g. ``--spike_k 5``).  The last line
is ``NAB standard score (7 series): NN.N``.
"""
import argparse
import csv
import datetime
import glob
import json
import os
import pathlib
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import nab  # noqa: E402  pylint: disable=wrong-import-position
from pipelines import REPO_ROOT, run, sensors  # noqa: E402  pylint: disable=wrong-import-position

DEFAULT_NAB = REPO_ROOT.parent / 'shared' / 'nab'
DEFAULT_OUT = REPO_ROOT / 'output' / 'eval-sensors'
CORPUS = 'realKnownCause'
EVAL_OPTIONS = ['--stuck_readings', '0', '--max_silence', '0',
                # Statistics are not scored: one window a day keeps them cheap.
                '--window', 'fixed:1d', '--trigger', 'default',
                '--runner', 'FnApiRunner']


def _rfc3339(stamp: str) -> str:
    dt = datetime.datetime.fromisoformat(stamp.strip())
    return dt.replace(tzinfo=datetime.timezone.utc).isoformat().replace(
        '+00:00', 'Z')


def load_series(nab_dir: pathlib.Path) -> dict:
    """``realKnownCause/<file>.csv`` -> (timestamps, values)."""
    series = {}
    for path in sorted(glob.glob(str(nab_dir / CORPUS / '*.csv'))):
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
        name = f'{CORPUS}/{os.path.basename(path)}'
        series[name] = ([r['timestamp'] for r in rows],
                        [float(r['value']) for r in rows])
    return series


def write_readings(series: dict, path: pathlib.Path):
    with open(path, 'w') as f:
        for name, (stamps, values) in series.items():
            for stamp, value in zip(stamps, values):
                f.write(json.dumps({
                    'event_time': _rfc3339(stamp), 'sensor_id': name,
                    'metric': 'value', 'value': value}) + '\n')


def read_incidents(out_dir: pathlib.Path) -> list:
    incidents = []
    for path in sorted(glob.glob(str(out_dir / 'anomalies' / '**' / '*'),
                                 recursive=True)):
        if os.path.isfile(path):
            with open(path) as f:
                incidents.extend(json.loads(line) for line in f if line.strip())
    return incidents


def evaluate(nab_dir, out_dir, job_args=(), out=sys.stdout) -> float:
    nab_dir, out_dir = pathlib.Path(nab_dir), pathlib.Path(out_dir)
    series = load_series(nab_dir)
    if len(series) != 7:
        raise SystemExit(f'eval-sensors: error: {nab_dir / CORPUS}: expected '
                         f'7 series, found {len(series)}')
    windows = nab.load_windows(nab_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    readings = out_dir / 'readings.jsonl'
    write_readings(series, readings)
    job_out = out_dir / 'job'
    run.run(sensors, ['--source', f'file://{readings}',
                      '--sink', f'jsonl://{job_out}', '--no-summary']
            + EVAL_OPTIONS + list(job_args), out=out)
    starts = {}
    for incident in read_incidents(job_out):
        starts.setdefault(incident['sensor_id'], set()).add(
            incident['start'])
    total, counted, labelled = 0.0, 0, 0
    out.write(f'{"series":55s} {"windows":>7s} {"hit":>4s} {"fp":>4s} '
              f'{"raw":>8s} {"score":>6s}\n')
    with open(out_dir / 'detections.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['file', 'timestamp'])
        for name, (stamps, _) in series.items():
            rfc = [_rfc3339(s) for s in stamps]
            found = starts.get(name, set())
            detected = [r in found for r in rfc]
            for stamp, hit in zip(stamps, detected):
                if hit:
                    writer.writerow([name, stamp])
            s = nab.score_series(stamps, detected, windows[name])
            total += s.raw
            counted += s.windows
            labelled += len(windows[name])
            out.write(f'{name:55s} {s.windows:7d} {s.tp:4d} {s.fp:4d} '
                      f'{s.raw:8.3f} {nab.normalised(s.raw, s.windows):6.1f}\n')
    score = nab.normalised(total, counted, labelled=labelled)
    out.write(f'detections: {out_dir / "detections.csv"}\n')
    out.write(f'NAB standard score ({len(series)} series): {score:.1f}\n')
    return score


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--nab', default=str(DEFAULT_NAB),
                        help='NAB data directory (default: ../shared/nab)')
    parser.add_argument('--out', default=str(DEFAULT_OUT),
                        help='output directory (default: output/eval-sensors)')
    args, job_args = parser.parse_known_args(argv)
    if not (pathlib.Path(args.nab) / 'combined_windows.json').is_file():
        parser.exit(2, f'eval-sensors: error: --nab {args.nab}: no NAB data '
                       f'(combined_windows.json) there\n')
    evaluate(args.nab, args.out, job_args)


if __name__ == '__main__':
    main()
