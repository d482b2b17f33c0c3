"""Faults of the world around a job, met as a user meets them: a sink that
cannot be written, brokers or endpoints that do not answer.  Each is one
line naming the option, the URI and the cause, with no traceback: before the
run (exit status 2) where a check can tell, else when the job meets it
(exit status 1)."""
import os
import socket
import subprocess
import sys

import pytest

from pipelines import REPO_ROOT

PREFIX = 'python -m pipelines logs: error: '
SMALL = ['logs', '--source', 'synthetic://logs?events=300&seed=3&'
         'malformed=0.05']


def cli(cwd, *args, env=None, timeout=300):
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
    return subprocess.run([sys.executable, '-m', 'pipelines', *args],
                          cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=timeout)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def assert_one_line(done, status, starts):
    assert done.returncode == status, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(PREFIX + starts), lines[0]
    assert 'Traceback' not in done.stderr + done.stdout
    return lines[0]


@pytest.mark.parametrize('scheme, option', [
    ('parquet', '--sink'), ('jsonl', '--dead_letter'), ('jsonl', '--alerts')])
def test_a_directory_that_cannot_be_made_is_refused_before_the_run(
        tmp_path, scheme, option):
    (tmp_path / 'a-file').write_text('not a directory')
    uri = f'{scheme}://a-file/out'
    done = cli(tmp_path, *SMALL, option, uri)
    line = assert_one_line(done, 2, f'argument {option}: {uri}: cannot '
                                    f'write under ')
    assert 'Not a directory' in line
    # Nothing was made: not the default sink's directory either.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a-file']


def test_a_sink_under_proc_is_refused_before_the_run(tmp_path):
    done = cli(tmp_path, *SMALL, '--sink', 'parquet:///proc/forbidden')
    assert_one_line(done, 2, 'argument --sink: parquet:///proc/forbidden: '
                             'cannot write under ')
    assert list(tmp_path.iterdir()) == []


def test_a_sink_that_fails_while_the_job_runs_is_one_line(tmp_path):
    # The directory is writable, but its dead_letter table cannot be made
    # there (a file is in the way): met only when the first dead letters
    # are written.
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'dead_letter').write_text('in the way')
    done = cli(tmp_path, *SMALL, '--sink', 'parquet://out')
    line = assert_one_line(done, 1, '--sink parquet://out: ')
    assert 'Not a directory' in line and 'out/dead_letter' in line
    assert 'while running' not in line
    assert done.stdout == ''        # no summary of a failed run


@pytest.mark.parametrize('uri, env, cause', [
    ('kafka://127.0.0.1:{port}/alerts', {}, 'do not answer'),
    ('pubsub://projects/p-1234/topics/alerts',
     {'PUBSUB_EMULATOR_HOST': '127.0.0.1:{port}'}, 'Pub/Sub does not answer'),
    ('bigquery://p-1234:analytics.logs_',
     {'BIGQUERY_EMULATOR_HOST': 'http://127.0.0.1:{port}'},
     'BigQuery does not answer'),
], ids=['kafka', 'pubsub', 'bigquery'])
def test_a_sink_that_does_not_answer_is_refused_before_the_run(
        tmp_path, uri, env, cause):
    port = closed_port()
    uri = uri.format(port=port)
    env = {k: v.format(port=port) for k, v in env.items()}
    done = cli(tmp_path, *SMALL, '--alerts', uri, env=env)
    line = assert_one_line(done, 2, f'argument --alerts: {uri}: ')
    assert cause in line
    assert list(tmp_path.iterdir()) == []


def test_a_failure_is_blamed_on_the_source_or_sink_whose_step_raised():
    import argparse
    from pipelines import run
    steps = {'Read': 'kafka://b:9092/logs', 'WriteDeadLetters': 'jsonl://d',
             'WriteServiceStats': 'parquet://out'}
    args = argparse.Namespace(source='kafka://b:9092/logs',
                              sink='parquet://out', dead_letter='jsonl://d',
                              alerts=None)
    failure = RuntimeError(
        "OSError: [Errno 28] No space left on device: 'd/dead_letter/x'\n"
        "  more text [while running 'WriteDeadLetters/ParDo(Fn)']")
    assert run.io_failure(failure, steps, args) == (
        "--dead_letter jsonl://d: OSError: [Errno 28] No space left on "
        "device: 'd/dead_letter/x' more text")
    read = ValueError("Timed out [while running 'Read/ReadPartitions']")
    assert run.io_failure(read, steps, args) == \
        '--source kafka://b:9092/logs: Timed out'
    # A step of no source or sink: a bug, whose traceback is to be seen.
    bug = ZeroDivisionError("x [while running 'ServiceStats/Combine']")
    assert run.io_failure(bug, steps, args) is None
    assert run.io_failure(ZeroDivisionError('no step named'), steps) is None
