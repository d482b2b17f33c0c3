"""The source/sink URI registry: parsing, validation per kind, parameters, and
adding a scheme by adding one module to transforms/io."""
import importlib
import pathlib
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import io
from transforms.io import Context, UriError, check_uri, parse_uri

KNOWN = ('bigquery://, console://, deadletters://, file://, jsonl://, '
         'kafka://, parquet://, pubsub://, synthetic://')


# ------------------------------------------------------------------ parse_uri

@pytest.mark.parametrize('text, scheme, location, params', [
    ('file://logs/*.log', 'file', 'logs/*.log', {}),
    ('file:///abs/dir/a.log.gz', 'file', '/abs/dir/a.log.gz', {}),
    ('parquet://output/logs?compression=snappy', 'parquet', 'output/logs',
     {'compression': 'snappy'}),
    ('synthetic://logs?events=500&seed=7', 'synthetic', 'logs',
     {'events': '500', 'seed': '7'}),
    ('console://', 'console', '', {}),
    ('file://a?', 'file', 'a', {}),
    # The scheme is case-insensitive, the location is kept as given.
    ('FILE://Logs/A.log', 'file', 'Logs/A.log', {}),
    # Surrounding blanks are dropped.
    ('  jsonl://out  ', 'jsonl', 'out', {}),
    # The last value of a repeated parameter wins; blank values are kept.
    ('synthetic://logs?seed=1&seed=2&start=', 'synthetic', 'logs',
     {'seed': '2', 'start': ''}),
    # Percent-escapes in values are decoded.
    ('synthetic://logs?start=2026-01-01T00%3A00%3A00Z', 'synthetic', 'logs',
     {'start': '2026-01-01T00:00:00Z'}),
    ('my_scheme2://x', 'my_scheme2', 'x', {}),
])
def test_parse_uri_splits_scheme_location_and_params(text, scheme, location,
                                                     params):
    uri = parse_uri(text)
    assert uri.scheme == scheme
    assert uri.location == location
    assert uri.params == params
    assert uri.text == text.strip()


@pytest.mark.parametrize('text', [
    'nouri', 'bad scheme://x', '://x', 'a-b://x', 'file:/x', 'file:x', '',
    'a.b://x',
])
def test_parse_uri_refuses_what_is_not_a_uri(text):
    with pytest.raises(UriError, match='is not a URI: expected SCHEME://'):
        parse_uri(text)


@pytest.mark.parametrize('text, query', [
    ('file://a?x', 'x'),
    ('file://a?a=1&&b=2', 'a=1&&b=2'),
    ('synthetic://logs?events=3&seed', 'events=3&seed'),
])
def test_parse_uri_refuses_a_malformed_query(text, query):
    with pytest.raises(UriError) as err:
        parse_uri(text)
    assert str(err.value) == f'{text}: malformed query string {query!r}'


def test_uri_error_is_a_value_error():
    assert issubclass(UriError, ValueError)


def test_param_converts_and_names_the_parameter_when_it_cannot():
    uri = parse_uri('synthetic://logs?events=12&rate=2.5&seed=x')
    assert uri.param('events', kind=int) == 12
    assert uri.param('rate', kind=float) == 2.5
    assert uri.param('missing', 'dflt') == 'dflt'
    with pytest.raises(UriError, match=r"seed='x' is not a valid int"):
        uri.param('seed', kind=int)


# ------------------------------------------------------------------ check_uri

@pytest.mark.parametrize('text, kind', [
    ('file://logs/*.log', 'source'),
    ('file://logs/*.log?block_bytes=1', 'source'),
    ('synthetic://logs', 'source'),
    ('synthetic://logs?events=10&seed=3&late=0&malformed=1', 'source'),
    ('parquet://out', 'sink'),
    ('parquet://out?compression=none', 'sink'),
    ('jsonl://out', 'sink'),
    ('console://', 'sink'),
])
def test_check_uri_accepts_usable_uris(text, kind, tmp_path, monkeypatch):
    # Relative paths resolve against the working directory: give the file
    # source something to match.
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'logs').mkdir()
    (tmp_path / 'logs' / 'a.log').write_bytes(b'x\n')
    assert check_uri(text, kind) == parse_uri(text)


def test_a_file_source_matching_nothing_is_refused_at_once(tmp_path):
    with pytest.raises(UriError) as err:
        check_uri(f'file://{tmp_path}/*.log', 'source')
    assert 'no file matches' in str(err.value)


def test_a_sink_scheme_is_not_a_source():
    with pytest.raises(UriError) as err:
        check_uri('parquet://out', 'source')
    assert str(err.value) == ('parquet:// cannot be used as a source; '
                              'sources: deadletters://, file://, kafka://, '
                              'pubsub://, synthetic://')


def test_a_source_scheme_is_not_a_sink():
    with pytest.raises(UriError) as err:
        check_uri('file://x/*.log', 'sink')
    assert str(err.value) == ('file:// cannot be used as a sink; '
                              'sinks: bigquery://, console://, jsonl://, kafka://, parquet://, '
                              'pubsub://')


@pytest.mark.parametrize('kind', ['source', 'sink'])
def test_an_unknown_scheme_lists_the_known_ones(kind):
    with pytest.raises(UriError) as err:
        check_uri('mqtt://broker/topic', kind)
    assert str(err.value) == f'unknown scheme mqtt://; known: {KNOWN}'


@pytest.mark.parametrize('text', ['_windowed_files://x', '__init__://x'])
def test_private_modules_are_not_schemes(text):
    with pytest.raises(UriError, match='unknown scheme'):
        check_uri(text, 'sink')


@pytest.mark.parametrize('text, kind, reason', [
    ('file://', 'source', 'no path'),
    ('parquet://', 'sink', 'no directory'),
    ('jsonl://', 'sink', 'no directory'),
    ('parquet://out?compression=lz4', 'sink',
     'compression must be zstd, snappy, gzip or none'),
    ('file://a.log?block_bytes=0', 'source', 'block_bytes must be at least 1'),
    ('file://a.log?block_bytes=4k', 'source',
     "block_bytes='4k' is not a valid int"),
])
def test_missing_location_or_bad_value_is_refused(text, kind, reason):
    with pytest.raises(UriError, match=reason):
        check_uri(text, kind)


# --------------------------------------------------------- parameter checks

@pytest.mark.parametrize('text, kind, unknown, accepted', [
    ('file://a.log?gzip=1', 'source', 'gzip', 'block_bytes'),
    ('jsonl://out?pretty=1', 'sink', 'pretty', 'none'),
    ('console://?color=1&wide=2', 'sink', 'color, wide', 'none'),
    ('parquet://out?codec=zstd&compression=zstd', 'sink', 'codec',
     'compression'),
    ('synthetic://logs?evnets=10&foo=1', 'source', 'evnets, foo',
     'disorder, events, late, malformed, rate, seed, services, start, tick'),
])
def test_unknown_parameters_are_refused_by_name(text, kind, unknown, accepted):
    with pytest.raises(UriError) as err:
        check_uri(text, kind)
    assert str(err.value) == (f'{text}: unknown parameter(s) {unknown}; '
                              f'accepted: {accepted}')


@pytest.mark.parametrize('query, reason', [
    ('events=abc', "events='abc' is not a valid int"),
    ('events=1.5', "events='1.5' is not a valid int"),
    ('seed=', "seed='' is not a valid int"),
    ('rate=fast', "rate='fast' is not a valid float"),
    ('late=2', 'late is a fraction in [0, 1]'),
    ('late=nan', 'late must be a finite number'),
    ('malformed=1.01', 'malformed is a fraction in [0, 1]'),
    ('late=-0.1', 'late must not be negative'),
    ('services=-1', 'services must not be negative'),
    ('events=0', 'events must be at least 1'),
    ('tick=0', 'tick must be greater than zero'),
    ('start=yesterday', "start='yesterday' is not an RFC 3339 time"),
    ('start=2026-01-01T00:00:00', 'has no time zone'),
])
def test_synthetic_parameters_are_typed_and_checked(query, reason):
    text = f'synthetic://logs?{query}'
    with pytest.raises(UriError) as err:
        check_uri(text, 'source')
    assert str(err.value).startswith(f'{text}: ')
    assert reason in str(err.value)


@pytest.mark.parametrize('text, name', [
    ('synthetic://nodomain', 'nodomain'),
    ('synthetic://', ''),
    ('synthetic://logs/extra', 'logs/extra'),
    ('synthetic://_private', '_private'),
    ('synthetic://os', 'os'),
])
def test_unknown_synthetic_domain_is_refused(text, name):
    with pytest.raises(UriError) as err:
        check_uri(text, 'source')
    assert str(err.value) == f'{text}: unknown synthetic domain {name!r}'


@pytest.mark.parametrize('query', [
    'rate=0', 'rate=nan', 'tick=nan', 'disorder=nan', 'tick=inf',
])
def test_synthetic_refuses_rates_and_durations_it_cannot_generate(query):
    with pytest.raises(UriError):
        check_uri(f'synthetic://logs?events=5&{query}', 'source')


# ------------------------------------------------------- schemes, describe

def test_schemes_by_kind():
    assert io.schemes() == ['bigquery', 'console', 'deadletters', 'file',
                            'jsonl', 'kafka', 'parquet', 'pubsub',
                            'synthetic']
    assert io.schemes('source') == ['deadletters', 'file', 'kafka', 'pubsub',
                                    'synthetic']
    assert io.schemes('sink') == ['bigquery', 'console', 'jsonl', 'kafka',
                                  'parquet', 'pubsub']


@pytest.mark.parametrize('kind, expected', [
    ('source', [('deadletters', 'dead letters'), ('file', 'GLOB'),
                ('kafka', 'Kafka'), ('pubsub', 'Pub/Sub'),
                ('synthetic', 'deterministic')]),
    ('sink', [('bigquery', 'BigQuery'), ('console', 'standard output'), ('jsonl', 'JSON lines'),
              ('kafka', 'Kafka'), ('parquet', 'Parquet'),
              ('pubsub', 'Pub/Sub')]),
])
def test_describe_gives_one_line_per_scheme(kind, expected):
    lines = io.describe(kind).split('\n')
    assert len(lines) == len(expected)
    for line, (scheme, word) in zip(lines, expected):
        prefix = f'{scheme}://  '
        assert line.startswith(prefix), line
        text = line[len(prefix):]
        assert text.strip() == text and text, line
        assert word in text, line


# ---------------------------------------------------------- extensibility

IO_DIR = pathlib.Path(io.__file__).resolve().parent
TEST_SCHEME = 'zz_testscheme'

TEST_MODULE = '''\
"""A scheme made by a test; removed when the test ends."""
import apache_beam as beam

from transforms.io import Source

DESCRIPTION = 'fixed records, for a test'


def validate(uri, kind):
    uri.check_params(('n',))
    uri.param('n', 1, int)


class FixedSource(Source):
    def expand(self, pbegin):
        n = self.uri.param('n', 1, int)
        records = [f'{self.uri.location}-{i}'.encode() for i in range(n)]
        return pbegin | 'Fixed' >> beam.Create(records)


def open_source(uri, context):
    return FixedSource(uri, context)
'''


def _forget_test_scheme():
    sys.modules.pop(f'transforms.io.{TEST_SCHEME}', None)
    importlib.invalidate_caches()


@pytest.fixture
def test_scheme_module(monkeypatch):
    path = IO_DIR / f'{TEST_SCHEME}.py'
    assert not path.exists(), f'{path.name} left over from an earlier run'
    monkeypatch.setattr(sys, 'dont_write_bytecode', True)
    try:
        path.write_text(TEST_MODULE)
        importlib.invalidate_caches()
        yield path
    finally:
        path.unlink(missing_ok=True)
        for cached in (IO_DIR / '__pycache__').glob(f'{TEST_SCHEME}.*'):
            cached.unlink(missing_ok=True)
        _forget_test_scheme()


def test_a_new_module_is_a_new_scheme(test_scheme_module):
    uri = check_uri(f'{TEST_SCHEME}://abc?n=3', 'source')
    assert (uri.scheme, uri.location, uri.params) == (
        TEST_SCHEME, 'abc', {'n': '3'})
    assert check_uri(f'{TEST_SCHEME}://x', 'source').location == 'x'
    assert TEST_SCHEME in io.schemes('source')
    assert TEST_SCHEME not in io.schemes('sink')
    assert f'{TEST_SCHEME}://  fixed records, for a test' in \
        io.describe('source').split('\n')
    # Its validate() is used, and it is a source only.
    with pytest.raises(UriError, match='unknown parameter'):
        check_uri(f'{TEST_SCHEME}://x?m=1', 'source')
    with pytest.raises(UriError, match="n='two' is not a valid int"):
        check_uri(f'{TEST_SCHEME}://x?n=two', 'source')
    with pytest.raises(UriError, match='cannot be used as a sink'):
        check_uri(f'{TEST_SCHEME}://x', 'sink')
    # And it reads in a pipeline like any source.
    p = TestPipeline(options=PipelineOptions(runner='BundleBasedDirectRunner'))
    records = p | io.open_source(f'{TEST_SCHEME}://abc?n=3', Context('t'))
    assert_that(records, equal_to([b'abc-0', b'abc-1', b'abc-2']))
    p.run().wait_until_finish()


def test_the_test_scheme_is_gone_afterwards(test_scheme_module):
    assert TEST_SCHEME in io.schemes()
    test_scheme_module.unlink()
    _forget_test_scheme()
    assert TEST_SCHEME not in io.schemes()
    with pytest.raises(UriError, match=f'unknown scheme {TEST_SCHEME}://'):
        check_uri(f'{TEST_SCHEME}://x', 'source')


@pytest.mark.parametrize('source,window,keeps_late,named', [
    ('kafka://localhost:9092/t?group=g', 'sliding:2m/1m', True, True),
    ('pubsub://projects/p/subscriptions/s', 'sliding:2m/1m', True, True),
    ('kafka://localhost:9092/t?group=g', 'fixed:60s', True, False),
    ('kafka://localhost:9092/t?group=g', 'sliding:2m/1m', False, False),
    ('file://trades.csv', 'sliding:2m/1m', True, False),
    ('synthetic://trades?events=10', 'sliding:2m/1m', True, False),
])
def test_late_letters_name_their_window_for_sliding_windows_read_again(
        source, window, keeps_late, named):
    """Where a restart resumes the source (kafka://, pubsub://), late
    records are kept and windows slide, a job's late letters name their
    window: its source gets late_from, the first window close of a
    record; elsewhere none (the job keeps its path)."""
    from transforms import windows
    from transforms.aggregate import per_window_late_from
    assert io.resumes(source) == source.startswith(('kafka', 'pubsub'))
    spec = windows.parse_window(window)
    trigger = windows.parse_trigger('late=1,lateness=30s')
    found = per_window_late_from(Context(job='t', keeps_late=keeps_late),
                                 source, spec, trigger)
    if not named:
        assert found is None
        return
    # a record at 130 s is in [60, 180) and [120, 240): the first closes
    # at 180 s, plus the lateness
    assert found(130.0) == 210.0
