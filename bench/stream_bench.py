"""``make run``'s stream: a job on its streaming synthetic default, scaled up.

``make run`` runs ``python -m pipelines JOB --streaming`` on the job's
built-in synthetic stream (``DEFAULT_SOURCE``): a ``TestStream`` on the local
runner, ticking its watermark and clock, with EARLY, ON_TIME and LATE panes,
late records kept as dead letters, and Parquet written per window and pane.
This measures that run with more events (the same URI with ``events=N``), as
events per CPU-second of the process (generating the stream, building and
running the pipeline; imports not counted), and checks the run's summary: every
record read was decoded, dead-lettered or counted by a named filter, and every
decoded record's window assignment reached a pane or, after the allowed
lateness, the dead letters.

    python bench/stream_bench.py --child beam JOB EVENTS OUT [EXECUTION]
"""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402  pylint: disable=wrong-import-position
# Imported before anything is measured.
from pipelines import logs, run, sensors, trades  # noqa: E402  pylint: disable=wrong-import-position

JOBS = {'logs': logs, 'trades': trades, 'sensors': sensors}


def source_of(job: str, events: int) -> str:
    """The job's default synthetic URI with ``events=N``."""
    default = JOBS[job].OPTIONS.DEFAULT_SOURCE
    base, _, query = default.partition('?')
    params = dict(urllib.parse.parse_qsl(query))
    params['events'] = str(events)
    return f'{base}?{urllib.parse.urlencode(params)}'


def beam_run(job, events, out, execution='columnar'):
    summary = run.run(JOBS[job], [
        '--streaming', '--source', source_of(job, int(events)),
        '--sink', f'parquet://{out}', '--execution', execution,
        '--no-summary', '--no-progress'])
    return {key: summary[key] for key in (
        'read', 'decoded', 'dead_lettered', 'filtered', 'balanced',
        'window_assignments', 'aggregated', 'late_kept', 'dropped_late',
        'panes_early', 'panes_on_time', 'panes_late')} | {
            'events': summary['read']}


def check(result: dict) -> str:
    """The summary adds up, or AssertionError naming what does not."""
    r = result
    assert r['balanced'] and r['read'] == r['decoded'] + r['dead_lettered'] \
        + r['filtered'], f'records unaccounted for: {r}'
    # Every window assignment reached a pane or the late dead letters.
    assert r['window_assignments'] == r['aggregated'] + r['late_kept'], r
    assert r['dropped_late'] == 0, r
    assert r['panes_early'] and r['panes_on_time'], r
    return (f'read {r["read"]:,} = {r["decoded"]:,} decoded + '
            f'{r["dead_lettered"]:,} dead letters + {r["filtered"]:,} '
            f'filtered; panes {r["panes_early"]}/{r["panes_on_time"]}/'
            f'{r["panes_late"]}, {r["late_kept"]} late kept')


RUNS = {'beam': beam_run}

if __name__ == '__main__' and len(sys.argv) > 2 and sys.argv[1] == '--child':
    common.child_main(RUNS)
