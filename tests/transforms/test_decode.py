"""What the jobs wire after decoding: records, and records keyed for their
grouping, each with its payload where late records are kept
(``records_and_keyed``, ``KeyRecords``)."""
import operator

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.decode import Decode, records_and_keyed
from transforms.market import decoders

LINES = [b'{"event_time":"2026-01-02T14:30:00.123Z","symbol":"AAPL",'
         b'"price":187.42,"size":100}',
         b'{"event_time":1767364200123,"symbol":" msft ","price":410.5,'
         b'"size":35}',
         b'{"event_time":1767364201000,"symbol":"AAPL","price":187.5,'
         b'"size":5}',
         b'not a trade']


@pytest.mark.parametrize('paired', [False, True],
                         ids=['records', 'with payloads'])
def test_records_and_keyed_records_with_and_without_payloads(paired):
    with test_pipeline.TestPipeline() as p:
        decoded = (p | beam.Create(LINES)
                   | Decode(decoders.make_decoder('json'),
                            stage='decode.trades', job='trades',
                            with_raw=paired))
        records, keyed = records_and_keyed(
            decoded.ok, operator.attrgetter('symbol'), paired,
            'KeyBySymbol', 'Trades')
        assert_that(records | 'Sizes' >> beam.Map(
            lambda t: (t.symbol, t.size)),
            equal_to([('AAPL', 100), ('MSFT', 35), ('AAPL', 5)]),
            label='records')
        if paired:
            # the record's key, the record and the payload it was read from
            got = keyed | 'Unpair' >> beam.Map(
                lambda kv: (kv[0], kv[1][0].size, kv[1][1]))
            expected = [('AAPL', 100, LINES[0]), ('MSFT', 35, LINES[1]),
                        ('AAPL', 5, LINES[2])]
        else:
            got = keyed | 'Unkey' >> beam.Map(lambda kv: (kv[0], kv[1].size))
            expected = [('AAPL', 100), ('MSFT', 35), ('AAPL', 5)]
        assert_that(got, equal_to(expected), label='keyed')


@pytest.mark.parametrize('paired', [False, True])
def test_the_keying_is_one_step_named_by_the_job(paired):
    """The job's step names stay what they were (a running job is updated
    in place by them): the keying is one step, not nested; the records are
    taken from the pairs only when asked for."""
    p = beam.Pipeline()
    decoded = (p | beam.Create(LINES)
               | Decode(decoders.make_decoder('json'), stage='decode.trades',
                        job='trades', with_raw=paired))
    records, _ = records_and_keyed(
        decoded.ok, operator.attrgetter('symbol'), paired, 'KeyBySymbol')
    proto = p.to_runner_api()
    names = {t.unique_name: t for t in proto.components.transforms.values()}
    assert 'KeyBySymbol' in names and not names['KeyBySymbol'].subtransforms
    assert not any(n.startswith('KeyBySymbol/') for n in names)
    assert (records is None) == paired
    assert 'Trades' not in names
