"""The command line: ``python -m pipelines [JOB] [--options]``, run as a user
would, in a scratch working directory."""
import argparse
import os
import pathlib
import re
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest

from pipelines import JOBS

from pipelines import logs
from pipelines.options import job_parser

REPO = pathlib.Path(__file__).resolve().parents[2]
PROG = 'python -m pipelines logs: error: '


def cli(cwd, *args, timeout=120):
    env = dict(os.environ)
    env['PYTHONPATH'] = str(REPO)
    env.pop(logs.MASK_KEY_ENV, None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, '-m', 'pipelines', *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def test_without_arguments_it_lists_the_jobs(tmp_path):
    done, _ = cli(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ''
    jobs = re.findall(r'^  (\w+) ', done.stdout, flags=re.M)
    assert jobs == list(JOBS)
    assert 'Per-service error rates' in done.stdout
    assert 'OHLCV bars, VWAP' in done.stdout
    assert list(tmp_path.iterdir()) == []


def _options():
    """Every option string of the logs job and the defaults --help shows."""
    parser = job_parser(logs.LogsOptions)
    strings, defaults = [], []
    for action in parser._actions:
        strings.extend(action.option_strings)
        if action.default not in (None, argparse.SUPPRESS) and \
                not isinstance(action.default, bool):
            defaults.append(str(action.default))
    return strings, defaults


def test_job_help_mentions_every_option_and_default(tmp_path):
    done, _ = cli(tmp_path, 'logs', '--help')
    assert done.returncode == 0, done.stderr
    text = ' '.join(done.stdout.split())
    strings, defaults = _options()
    assert {'--source', '--sink', '--window', '--trigger', '--mask'} <= \
        set(strings)
    for option in strings:
        assert re.search(rf'(^|[\s\[]){re.escape(option)}\b', text), option
    assert 'fixed:60s' in defaults
    for default in defaults:
        assert f'(default: {default})' in text, default
    # The schemes and the synthetic parameters are documented too.
    for scheme in ('file://', 'synthetic://', 'parquet://', 'jsonl://',
                   'console://'):
        assert scheme in text
    assert 'events (30000)' in text
    assert list(tmp_path.iterdir()) == []


def case(id_, args, message, prog=PROG):
    return pytest.param(args, prog + message, id=id_)


@pytest.mark.parametrize('args, expected', [
    case('bad-window', ['logs', '--window', 'fixed:abc'],
         "argument --window: bad window spec 'fixed:abc'"),
    case('unknown-window-kind', ['logs', '--window=tumbling:1m'],
         "argument --window: bad window spec 'tumbling:1m'"),
    case('bad-trigger', ['logs', '--trigger', 'early=soon'],
         "argument --trigger: bad trigger spec 'early=soon'"),
    case('late-without-lateness', ['logs', '--trigger', 'late=2'],
         "argument --trigger: bad trigger spec 'late=2'"),
    case('near-miss-option', ['logs', '--windw', 'fixed:60s'],
         'unknown option --windw (did you mean --window?); see --help'),
    case('unknown-option', ['logs', '--bogus_flag'],
         'unknown option --bogus_flag'),
    case('not-a-uri', ['logs', '--source', 'nouri'],
         "argument --source: 'nouri' is not a URI"),
    case('malformed-query', ['logs', '--source', 'file://a?x'],
         'argument --source: file://a?x: malformed query string'),
    case('unknown-scheme', ['logs', '--source', 'mqtt://broker/topic'],
         'argument --source: unknown scheme mqtt://; known: '),
    case('xlang-kafka-locally', ['logs', '--source',
                                 'kafka://localhost:9092/logs',
                                 '--kafka_io', 'xlang'],
         'argument --kafka_io: xlang runs Beam\'s Java KafkaIO'),
    case('kafka-bad-stop', ['logs', '--source',
                            'kafka://localhost:9092/logs?stop=soon'],
         "argument --source: kafka://localhost:9092/logs?stop=soon: "
         "stop='soon'"),
    case('pubsub-sink-subscription', ['logs', '--alerts',
                                      'pubsub://projects/p-1234/'
                                      'subscriptions/alerts'],
         'argument --alerts: pubsub://projects/p-1234/subscriptions/alerts: '
         'a sink publishes to a topic'),
    case('sink-as-source', ['logs', '--source', 'parquet://out'],
         'argument --source: parquet:// cannot be used as a source'),
    case('synthetic-param-type',
         ['logs', '--source', 'synthetic://logs?events=abc'],
         "argument --source: synthetic://logs?events=abc: parameter "
         "events='abc' is not a valid int"),
    case('sink-unknown-param', ['logs', '--sink', 'parquet://out?level=9'],
         'argument --sink: parquet://out?level=9: unknown parameter(s) '
         'level; accepted: compression'),
    case('source-as-dead-letter-sink', ['logs', '--dead_letter', 'file://x'],
         'argument --dead_letter: file:// cannot be used as a sink'),
    case('file-matches-nothing',
         ['logs', '--source', 'file://no/such/dir/*.log'],
         "argument --source: file://no/such/dir/*.log: no file matches "
         "'no/such/dir/*.log'"),
    case('hash-without-key', ['logs', '--mask', 'hash'],
         '--mask=hash needs --mask_key'),
    case('unknown-job', ['nojob'], "unknown job 'nojob'; jobs: logs",
         prog='python -m pipelines: error: '),
    pytest.param(
        ['logs', '--source', 'synthetic://logs?events=10&rate=0'],
        PROG + 'argument --source: ', id='synthetic-rate-zero'),
])
def test_errors_are_one_line_exit_2_and_start_no_pipeline(tmp_path, args,
                                                          expected):
    done, seconds = cli(tmp_path, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(expected), lines[0]
    assert done.stdout == ''
    # Nothing was run: no output directory, nothing at all in the cwd.
    assert not (tmp_path / 'output').exists()
    assert list(tmp_path.iterdir()) == []
    assert seconds < 60


def test_a_small_run_writes_its_tables_and_adds_up(tmp_path):
    done, _ = cli(tmp_path, 'logs', '--source',
                  'synthetic://logs?events=500&seed=1', '--sink',
                  'parquet://out', timeout=300)
    assert done.returncode == 0, done.stderr
    summary = dict(re.findall(r'^\s*(records read|adds up)\s+(\S+)',
                              done.stdout, flags=re.M))
    assert summary == {'records read': '500', 'adds up': 'yes'}, done.stdout
    assert not (tmp_path / 'output').exists()
    for table in ('service_stats', 'dead_letter'):
        assert (tmp_path / 'out' / table).is_dir(), table
    stats = ds.dataset(tmp_path / 'out' / 'service_stats').to_table()
    assert stats.num_rows > 0
    # Five services by default; every row is one of them.
    assert set(stats.column('service').to_pylist()) <= {
        'checkout', 'search', 'auth', 'catalog', 'payments'}
    dead = ds.dataset(tmp_path / 'out' / 'dead_letter').to_table()
    assert dead.num_rows > 0
    assert set(dead.column('stage').to_pylist()) == {'decode.logs'}
    assert not [p for p in (tmp_path / 'out').rglob('*') if '.tmp-' in p.name]
