"""The run report: every job's figures, the accounting, dead letters and
panes, on small real runs of every job (logs with its template tables,
trades, video_qoe, sensors) and on hand-made tables built from the jobs'
record types; figures skipped with a note when a column is missing."""
import base64
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from PIL import Image

import report_data
from pipelines import REPO_ROOT, logs, report, run
from pipelines.report import data, page
from pipelines.report.sections import SECTIONS, common
from pipelines.report.sections import logs as logs_section
from pipelines.report.sections import sensors as sensors_section
from pipelines.report.sections import video_qoe as video_section

IMG = re.compile(r'<img class="plot"[^>]*src="data:image/png;base64,([^"]+)"')


def _table(root, job, table):
    return ds.dataset(str(root / job / table), format='parquet').to_table()


def _article(text, anchor):
    return text.split(f'<article id="{anchor}">')[1].split('</article>')[0]


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
    # logs: series and top templates; video_qoe: rollups and sessions.
    own = {'logs': 2, 'trades': len(symbols), 'video_qoe': 2, 'sensors': 1}
    for job, sections in built.items():
        job_own, accounting, dead, panes = sections
        assert job_own.figures == own[job], job
        dead_letters = (root / job / 'dead_letter').is_dir()
        assert (accounting.figures, dead.figures, panes.figures) == \
            (1, int(dead_letters), 1), job
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
                         ('late, kept (after the allowed lateness: dead '
                          'letters, stage window.late)', s['late_kept']),
                         ('dropped late (after the allowed lateness)',
                          s['dropped_late']),
                         ('rows written: service_stats',
                          s['rows_written']['service_stats'])):
        assert f'<td>{label}</td><td>{value}</td>' in logs_part, label


def test_dead_letter_reasons_add_up_and_their_samples_are_masked(
        report_root, handmade_root):
    root, summaries = report_root
    for job in SECTIONS:
        if not (root / job / 'dead_letter').is_dir():
            continue
        out = data.JobOutput(job, root / job)
        reasons = common._reasons(out)   # pylint: disable=protected-access
        # decoders' dead letters and late records kept (stage window.late)
        assert sum(n for _, n, _ in reasons) == \
            summaries[job]['dead_lettered'] + \
            summaries[job]['late_dead_letters'] == \
            _table(root, job, 'dead_letter').num_rows
        stages = set(_table(root, job, 'dead_letter')['stage'].to_pylist())
        assert {r.split(': ', 1)[0] for r, _, _ in reasons} == stages
    out = data.JobOutput('video_qoe', handmade_root[0] / 'video_qoe')
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


def test_top_templates_are_the_final_counts_of_the_templates_table(
        report_root, rendered):
    root, summaries = report_root
    text, _ = rendered
    frame = _table(root, 'logs', 'templates').to_pandas()
    got = logs_section.template_totals(frame)
    # Oracle: the highest pane per service, template and window, summed per
    # template text.
    key = ['service', 'template_id', 'window_start']
    last = frame.loc[frame.groupby(key)['pane_index'].idxmax()]
    want = last.groupby('template')['count'].sum()
    assert got['count'].to_dict() == want.to_dict()
    assert list(got['count']) == sorted(got['count'], reverse=True)
    # Every record aggregated into service_stats was mined into a template.
    stats = _table(root, 'logs', 'service_stats').to_pandas()
    stats = stats.loc[stats.groupby(['service', 'window_start'])[
        'pane_index'].idxmax()]
    assert got['count'].sum() == stats['count'].sum() == \
        summaries['logs']['aggregated']
    shown = min(len(got), logs_section.TOP_TEMPLATES)
    assert f'Top {shown} of {len(got)} log templates by records' in \
        _article(text, 'logs')


def test_template_alerts_are_listed_by_kind(report_root, rendered):
    root, _ = report_root
    text, _ = rendered
    alerts = _table(root, 'logs', 'template_alerts').to_pandas()
    assert len(alerts) > 0
    kinds = ', '.join(f'{n} {k}' for k, n in
                      alerts['kind'].value_counts().items())
    assert f'template alerts ({len(alerts)}: {kinds})' in \
        _article(text, 'logs')


def test_video_incidents_shade_the_series_of_their_alert(report_root,
                                                          rendered):
    root, _ = report_root
    text, _ = rendered
    rollups = _table(root, 'video_qoe', 'qoe_rollups').to_pandas()
    series = set(video_section.dimension_keys(rollups))
    assert 'all' in series and len(series) <= video_section.MAX_SERIES
    alerts = _table(root, 'video_qoe', 'alerts').to_pandas()
    # Oracle: one incident per RAISED alert of a shaded metric (the run
    # ends with every alert recovered or still open), each on a drawn series.
    raised = alerts[(alerts['state'] == 'RAISED') & alerts['metric'].isin(
        [video_section.P95, video_section.RATIO])]
    assert len(raised) > 0 and set(raised['key']) <= series
    assert f'shaded: {len(raised)} incidents from alert to recovery' in \
        _article(text, 'video_qoe')


def test_sensor_incidents_are_shaded_by_kind(report_root, rendered):
    root, _ = report_root
    text, _ = rendered
    anomalies = _table(root, 'sensors', 'anomalies').to_pandas()
    assert len(anomalies) > 0
    assert set(anomalies['kind']) <= set(sensors_section.KIND_COLORS)
    part = _article(text, 'sensors')
    assert f'{len(anomalies)} anomaly incidents shaded by kind' in part
    assert f'anomaly incidents ({len(anomalies)})' in part
    stats = _table(root, 'sensors', 'stats').to_pandas()
    raw = int(stats['uncalibrated_count'].sum())
    assert raw == 0 or f'{raw:,} of {int(stats["count"].sum()):,} ' \
        f'readings had no calibration row' in part


def test_a_trend_is_drawn_only_inside_its_window_band():
    fig, axes = page.figure()
    ax = axes[0][0]
    day = 86400.0
    # Window 1: 300 s from 10 at 1/s, band 9..12 -> drawn for its first 2 s.
    # Window 2: flat at 5 inside its band: whole window.  Window 3: flat
    # outside its band: not drawn.
    start = np.array([0.0, 1.0, 2.0])
    sensors_section._trend(    # pylint: disable=protected-access
        ax, start, start + 300 / day, np.array([10.0, 5.0, 5.0]),
        np.array([1.0, 0.0, 0.0]), np.array([9.0, 4.0, 6.0]),
        np.array([12.0, 6.0, 7.0]))
    segments = ax.collections[0].get_segments()
    assert len(segments) == 2
    np.testing.assert_allclose(segments[0], [[0.0, 10.0], [2 / day, 12.0]])
    np.testing.assert_allclose(segments[1], [[1.0, 5.0], [1 + 300 / day,
                                                           5.0]])


def test_hand_made_tables_of_the_record_types_draw_every_figure(
        handmade_root):
    root, records = handmade_root
    text, built = report.render(report.find_jobs(root))
    built = dict(built)
    assert set(built) == {'video_qoe', 'sensors'}
    for job, sections in built.items():
        assert [s.figures for s in sections] == \
            [2 if job == 'video_qoe' else 1, 1, 1, 1], job
        assert not any(s.skipped for s in sections), job
    # The panes figure follows the 'all' rows of qoe_rollups.
    late = sum(1 for r in records['video_qoe']['qoe_rollups']
               if r.dimension == 'all' and r.pane_timing == 'LATE')
    assert late > 0
    assert (f'of qoe_rollups where dimension = all per window; {late} LATE '
            f'rows') in _article(text, 'video_qoe')
    # The one alert pair opens and closes one incident on cdn=fastly.
    assert 'shaded: 1 incidents from alert to recovery' in text
    assert '2 anomaly incidents shaded by kind' in _article(text, 'sensors')


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
