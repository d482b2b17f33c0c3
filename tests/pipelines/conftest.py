"""Fixtures of the run-report tests (shared by the page and browser tests)."""
import pytest

import report_data


@pytest.fixture(scope='session')
def report_root(tmp_path_factory):
    """A folder with small real runs of every job.  Returns (root,
    summaries)."""
    root = tmp_path_factory.mktemp('output')
    summaries = report_data.run_small_jobs(root)
    return root, summaries


@pytest.fixture(scope='session')
def handmade_root(tmp_path_factory):
    """A folder with hand-made video_qoe and sensors tables (of the jobs'
    record types) holding EARLY, ON_TIME and LATE panes.  Returns (root,
    {job: {table: [records]}})."""
    root = tmp_path_factory.mktemp('handmade')
    return root, {
        'video_qoe': report_data.video_qoe_tables(root / 'video_qoe'),
        'sensors': report_data.sensors_tables(root / 'sensors')}
