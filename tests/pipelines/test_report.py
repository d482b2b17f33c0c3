"""The run report: every job's figures, the accounting, dead letters and
panes, on small real runs (logs, trades) and hand-made tables (video_qoe,
sensors); figures skipped with a note when a column is missing."""
import base64
import io
import json
import os
import re
import subprocess
import sys

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from PIL import Image

import report_data
from pipelines import REPO_ROOT, logs, report, run
from pipelines.report import data
from pipelines.report.sections import SECTIONS, common

IMG = re.compile(r'<img class="plot"[^>]*src="data:image/png;base64,([^"]+)"')


def _table(root, job, table):
    return ds.dataset(str(root / job / table), format='parquet').to_table()


@pytest.fixture(scope='module')
def rendered(report_root):
    root, _ = report_root
    jobs = report.find_jobs(root)
    text, built = report.render(jobs)
    return text, dict(built)


def test_a_local_run_writes_its_summary_beside_its_tables(report_root):
    root, summaries = report_root
    for job, summary in summaries.items():
        written = json.loads((root / job / run.SUMMARY_FILE).read_text())
        assert written['job'] == job
        assert written['summary'] == json.loads(json.dumps(summary))
        assert written['summary']['balanced']
        assert written['counters']['read'] == summary['read'] > 0


def test_the_registry_has_one_section_per_job():
    from pipelines import JOBS    # pylint: disable=import-outside-toplevel
    assert set(JOBS) <= set(SECTIONS)
    assert set(SECTIONS) == {'logs', 'trades', 'video_qoe', 'sensors'}


def test_every_job_is_found_and_every_figure_drawn(report_root, rendered):
    root, _ = report_root
    _, built = rendered
    assert set(built) == set(SECTIONS)
    symbols = pc.unique(_table(root, 'trades', 'bars')['symbol'])
    own = {'logs': 1, 'trades': len(symbols), 'video_qoe': 2, 'sensors': 1}
    for job, sections in built.items():
        job_own, accounting, dead, panes = sections
        assert job_own.figures == own[job], job
        assert (accounting.figures, dead.figures, panes.figures) == \
            (1, 1, 1), job
        assert not any(s.skipped for s in sections), (job, [
            s.skipped for s in sections])


def test_the_page_is_self_contained_and_its_images_are_pngs(rendered):
    text, built = rendered
    assert '<script' not in text.lower()
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert '@import' not in text and 'url(' not in text
    images = IMG.findall(text)
    assert len(images) == sum(s.figures for sections in built.values()
                              for s in sections)
    for encoded in images:
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert image.format == 'PNG'
        assert image.width > 300 and image.height > 100
        # Not blank: a drawn figure has many colours.
        assert len(image.convert('RGB').getcolors(1 << 16) or ()) > 8


def test_the_accounting_shows_the_run_summary(report_root, rendered):
    text, _ = rendered
    _, summaries = report_root
    logs_part = text.split('<article id="logs">')[1].split('</article>')[0]
    s = summaries['logs']
    for label, value in (('records read', s['read']),
                         ('decoded', s['decoded']),
                         ('dead-lettered', s['dead_lettered']),
                         ('adds up', 'yes'),
                         ('dropped late (after the allowed lateness)',
                          s['dropped_late']),
                         ('rows written: service_stats',
                          s['rows_written']['service_stats'])):
        assert f'<td>{label}</td><td>{value}</td>' in logs_part, label


def test_dead_letter_reasons_add_up_and_their_samples_are_masked(
        report_root):
    root, summaries = report_root
    for job in ('logs', 'trades'):
        out = data.JobOutput(job, root / job)
        reasons = common._reasons(out)   # pylint: disable=protected-access
        assert sum(n for _, n, _ in reasons) == \
            summaries[job]['dead_lettered'] == \
            _table(root, job, 'dead_letter').num_rows
        stages = set(_table(root, job, 'dead_letter')['stage'].to_pylist())
        assert {r.split(': ', 1)[0] for r, _, _ in reasons} == stages
    out = data.JobOutput('video_qoe', root / 'video_qoe')
    samples = [s for _, _, found in common._reasons(out) for s in found]  # pylint: disable=protected-access
    assert samples and all('<ip>' in s and '<email>' in s for s in samples)
    assert not any('example.com' in s or '10.1.2.' in s for s in samples)


def test_reason_patterns_group_particulars():
    assert common.reason_pattern("field 'x' at offset 17") == \
        common.reason_pattern("field 'yy' at offset 3") == \
        'field … at offset N'


def test_final_values_are_the_highest_pane(report_root):
    root, _ = report_root
    frame = _table(root, 'logs', 'service_stats').to_pandas()
    got = data.final(frame, ['service'])
    # Oracle: the row of the largest pane_index per service and window.
    want = frame.loc[frame.groupby(['service', 'window_start'])[
        'pane_index'].idxmax()]
    key = ['service', 'window_start']
    assert len(got) == len(want) == len(frame[key].drop_duplicates())
    assert got.sort_values(key)['count'].tolist() == \
        want.sort_values(key)['count'].tolist()
    assert (frame['pane_timing'] == 'LATE').any()   # LATE panes do occur


def test_the_panes_figure_counts_late_rows(report_root, rendered):
    root, _ = report_root
    text, _ = rendered
    late = pc.sum(pc.equal(_table(root, 'logs', 'service_stats')[
        'pane_timing'], 'LATE')).as_py()
    logs_part = text.split('<article id="logs">')[1]
    assert f'of service_stats per window; {late} LATE rows' in logs_part


def test_a_missing_column_skips_that_figure_with_a_note(tmp_path):
    report_data.video_qoe_tables(
        tmp_path / 'video_qoe',
        rename={'video_start_time_p95_ms': 'startup_p95'},
        drop=('avg_bitrate_kbps',))
    text, built = report.render(report.find_jobs(tmp_path))
    built = dict(built)
    own = built['video_qoe'][0]
    assert own.skipped == ['start-up time and rebuffering per dimension']
    assert own.figures == 1          # the session distributions still drawn
    assert 'video_start_time_p95_ms' in text   # the note names what it sought
    assert 'startup_p95' in text               # and what the table has
    assert re.search(r'not drawn for\s+avg_bitrate_kbps', text)
    assert built['video_qoe'][1].figures == 1     # accounting unaffected


def test_anomalies_without_their_times_leave_the_series_drawn(tmp_path):
    report_data.sensors_tables(tmp_path / 'sensors', rename={'start': 'begin'})
    text, built = report.render(report.find_jobs(tmp_path))
    own = dict(built)['sensors'][0]
    assert own.figures == 1 and own.skipped == []
    assert re.search(r'anomaly incidents on the series: not drawn: table '
                     r'anomalies has no column start', text)
    assert '0 anomaly incidents shaded' in text


def test_a_30000_record_run_gives_a_page_under_2_mb(tmp_path):
    summary = run.run(logs, ['--sink', f'parquet://{tmp_path / "logs"}',
                             '--no-summary', '--no-progress'])
    assert summary['read'] == 30000
    text, built = report.render(report.find_jobs(tmp_path))
    built = dict(built)
    assert sum(s.figures for s in built['logs']) == 4
    assert len(text.encode()) < 2 * 1024 * 1024


def _cli(cwd, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, '-m', 'pipelines', 'report', *args],
                          cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_command_writes_the_page_and_prints_its_path(report_root,
                                                         tmp_path):
    root, _ = report_root
    done = _cli(tmp_path, str(root / 'sensors'))
    assert done.returncode == 0, done.stderr
    target = root / 'sensors' / 'report.html'
    assert done.stdout == f'report: {target}\n'
    assert target.stat().st_size > 10_000
    done = _cli(tmp_path, str(root / 'sensors'), '--out', 'r/x.html')
    assert done.returncode == 0, done.stderr
    assert (tmp_path / 'r' / 'x.html').is_file()


@pytest.mark.parametrize('make, args, expected', [
    (False, ['missing'], 'OUTPUT_DIR missing: no such folder'),
    (True, ['missing'], 'no job output found'),
    (False, [], 'the following arguments are required: OUTPUT_DIR'),
    (True, ['missing', '--outt', 'x'], 'unrecognized arguments: --outt'),
])
def test_errors_are_one_line_exit_2(tmp_path, make, args, expected):
    if make:
        (tmp_path / 'missing').mkdir()
        (tmp_path / 'missing' / 'notes').mkdir()
    done = _cli(tmp_path, *args)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert expected in done.stderr
    assert done.stderr.startswith('python -m pipelines report: error: ')
