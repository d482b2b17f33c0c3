"""Fixtures of the run-report tests (shared by the page and browser tests)."""
import pytest

import report_data


@pytest.fixture(scope='session')
def report_root(tmp_path_factory):
    """A folder with every job's output: real small runs of logs and trades,
    hand-made video_qoe and sensors tables.  Returns (root, summaries)."""
    root = tmp_path_factory.mktemp('output')
    summaries = report_data.run_small_jobs(root)
    report_data.video_qoe_tables(root / 'video_qoe')
    report_data.sensors_tables(root / 'sensors')
    return root, summaries
