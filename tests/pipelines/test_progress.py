"""Live progress of a local run: one updating line on a terminal (a real
pseudo-terminal here), plain lines otherwise, nothing with --no-progress."""
import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading

import pyarrow.dataset as ds
from apache_beam.utils.timestamp import Timestamp

from pipelines import REPO_ROOT, progress

# A stream of many steps (one tick a second of arrivals), so that the run
# lasts several redraws of the line and the watermark is seen moving.
EVENTS = 10000


def _run_on_a_terminal(cwd, *extra):
    """Runs a small streaming logs job with its standard error on a
    pseudo-terminal; returns (exit status, what the terminal received)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 200, 0, 0))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    child = subprocess.Popen(
        [sys.executable, '-m', 'pipelines', 'logs', '--streaming',
         '--source', f'synthetic://logs?events={EVENTS}&seed=3&tick=1',
         '--sink', 'parquet://out', '--no-summary', *extra],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=slave)
    os.close(slave)
    received = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:            # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        received += chunk
    os.close(master)
    child.stdout.read()
    return child.wait(timeout=300), received.decode('utf-8', 'replace')


def _rows(folder, table):
    path = folder / table
    return ds.dataset(str(path), format='parquet').count_rows() \
        if path.is_dir() else 0


def test_a_terminal_gets_one_updating_line_that_ends_on_the_totals(tmp_path):
    status, screen = _run_on_a_terminal(tmp_path)
    assert status == 0, screen
    # One line redrawn in place (carriage returns), not a line per update.
    assert '\r' in screen
    assert screen.count('\n') <= 2, screen
    last = screen.replace('\r\n', '\n').split('\r')[-1].strip()
    out = tmp_path / 'out'
    dead = _rows(out, 'dead_letter')
    rows = sum(_rows(out, t) for t in ('service_stats', 'alerts',
                                       'dead_letter'))
    match = re.fullmatch(
        r'logs: (\d+) read \[[\d:]+, +[\d.]+ records/s, watermark '
        r'(\S+), panes (\d+), rows written (\d+), dead letters (\d+)\]',
        last)
    assert match, last
    assert int(match[1]) == EVENTS
    # The watermark moved while the job ran (the last one seen is kept).
    assert re.fullmatch(r'2026-01-01T\d\d:\d\d:\d\dZ', match[2]), last
    assert int(match[3]) == _rows(out, 'service_stats') > 0
    assert int(match[4]) == rows
    assert int(match[5]) == dead > 0


def test_no_progress_leaves_the_terminal_silent(tmp_path):
    status, screen = _run_on_a_terminal(tmp_path, '--no-progress')
    assert status == 0, screen
    assert screen == ''


def test_elsewhere_a_plain_line_every_few_seconds():
    counts = iter(range(100, 100000, 100))
    lock = threading.Lock()

    def sample():
        with lock:
            return progress.Snapshot(read=next(counts), panes=3, rows=5,
                                     dead_letters=1)

    stream = io.StringIO()
    shown = progress.Progress('logs', sample, stream=stream,
                              interval_s=0.02).start()
    threading.Event().wait(0.3)
    shown.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3
    assert '\r' not in stream.getvalue()
    reads = []
    for line in lines:
        m = re.fullmatch(r'logs: (\d+) records read \((\d+)/s\), watermark -, '
                         r'panes 3, rows written 5, dead letters 1', line)
        assert m, line
        reads.append(int(m[1]))
    assert reads == sorted(reads) and reads[0] >= 100


def test_a_snapshot_sums_panes_and_rows_of_every_table():
    s = progress.snapshot(
        {'read': 10, 'dead_letters': 2, 'panes.EARLY': 3, 'panes.LATE': 1,
         'rows_written.a': 4, 'rows_written.dead_letter': 2, 'decoded': 8},
        Timestamp.of(1767225720))
    assert s == progress.Snapshot(10, s.watermark, 4, 6, 2)
    assert s.watermark.isoformat() == '2026-01-01T00:02:00+00:00'
