"""``synthetic://DOMAIN?events=N&seed=S&...``: a built-in deterministic stream.

In streaming mode the stream is played as it would arrive: records in arrival
order (out of order in event time, some late, some malformed), the watermark
advancing after every tick and processing time advancing by ``tick`` seconds,
so that EARLY, ON_TIME and LATE panes all occur.  On the local runner this is
Beam's ``TestStream``.  In batch mode the records are a bounded collection (all
panes ON_TIME).

Domains and their parameters: see ``python -m pipelines JOB --help``.
"""
import importlib
import importlib.util
import math

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.io import Source, UriError, counted

DESCRIPTION = ('built-in deterministic stream, e.g. synthetic://logs?events='
               '30000&seed=7 (parameters: see the job\'s --help)')


def _domain(uri):
    name = uri.location.strip('/')
    module_name = f'transforms.synthetic.{name}'
    if not name or not name.isidentifier() or \
            importlib.util.find_spec(module_name) is None:
        raise UriError(f'{uri.text}: unknown synthetic domain {name!r}')
    return importlib.import_module(module_name)


def params_of(uri) -> dict:
    module = _domain(uri)
    uri.check_params(module.PARAMS)
    params = {name: uri.param(name, default, kind)
              for name, (kind, default, _) in module.PARAMS.items()}
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UriError(f'{uri.text}: {name} must be a finite number')
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value < 0:
            raise UriError(f'{uri.text}: {name} must not be negative')
    for name in ('rate', 'tick'):
        if name in params and params[name] <= 0:
            raise UriError(f'{uri.text}: {name} must be greater than zero')
    for name in ('late', 'malformed', 'exit', 'fail', 'json', 'requests'):
        if name in params and not 0 <= params[name] <= 1:
            raise UriError(f'{uri.text}: {name} is a fraction in [0, 1]')
    if params.get('events', 1) < 1:
        raise UriError(f'{uri.text}: events must be at least 1')
    try:
        module.parse_start(params['start'])
    except (KeyError, AttributeError):
        pass
    except ValueError as e:
        raise UriError(f'{uri.text}: {e}') from None
    return params


def validate(uri, kind):
    params_of(uri)


def generate(uri):
    """The :class:`~transforms.synthetic.SyntheticStream` a parsed
    ``synthetic://`` URI names."""
    return _domain(uri).generate(params_of(uri))


def describe_params(domain: str) -> str:
    module = importlib.import_module(f'transforms.synthetic.{domain}')
    return '; '.join(f'{name} ({default}): {text}'
                     for name, (_, default, text) in module.PARAMS.items())


def test_stream(stream) -> TestStream:
    """The stream as a TestStream: records, then watermark, then clock, per tick.

    Processing time starts at the epoch and advances by the tick, far below the
    event times: Beam's Python trigger driver compares processing-time firings
    with the window end, so a clock ahead of event time would mark EARLY panes
    as LATE.
    """
    ts = TestStream(coder=beam.coders.BytesCoder())
    watermark = None
    for records, tick_watermark in stream.ticks:
        if records:
            ts.add_elements([TimestampedValue(p, t) for t, p in records])
        if watermark is None or tick_watermark > watermark:
            ts.advance_watermark_to(Timestamp.of(tick_watermark))
            watermark = tick_watermark
        ts.advance_processing_time(stream.tick_seconds)
    return ts.advance_watermark_to_infinity()


class SyntheticSource(Source):
    def expand(self, pbegin):
        stream = generate(self.uri)
        read = Metrics.counter(self.context.job, 'read')
        if self.context.streaming:
            records = pbegin | 'Play' >> test_stream(stream)
        else:
            records = pbegin | 'Create' >> beam.Create(
                list(stream.payloads()), reshuffle=False)
        return records | 'CountRead' >> beam.Map(counted, read)


def open_source(uri, context):
    return SyntheticSource(uri, context)
