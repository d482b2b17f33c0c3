"""The short fuzz run of the test suite (``make fuzz`` runs a million
inputs): every registered decoder, and proof that the harness finds what it
is there to find."""
import pytest

from fuzz import harness, run
from fuzz.targets import TARGETS, Target
from transforms.decode import DecodeError
from transforms.logs import columnar as logs_columnar
from transforms.logs import decoders as logs
from transforms.logs.records import LogRecord
from fuzz import strategies


@pytest.mark.parametrize('target', TARGETS, ids=lambda t: t.name)
def test_a_short_fuzz_run_finds_nothing(target):
    counts = run.fuzz_target(target, examples=25, derandomize=True)
    assert counts['inputs'] >= counts['drawn'] > 0
    assert counts['inputs'] == counts['records'] + counts['dead_letters'] + \
        counts['filtered']
    if target.columnar is not None:
        assert counts['blocks'] > 0


def _decoder_with_a_bug(text):
    if '"status":5' in text:
        raise KeyError('status')       # a bug, not a refusal
    return logs.decode_json_log(text)


def test_an_exception_escaping_a_decoder_is_a_finding():
    target = Target('buggy', _decoder_with_a_bug, LogRecord, 'decode.logs',
                    None)
    line = b'{"timestamp":"2026-01-01T00:00:00Z","service":"a","status":503}'
    counts = harness.Counts()
    with pytest.raises(harness.Finding, match='KeyError'):
        harness.check_lines(target, [line], counts)
    harness.check_lines(target, [line.replace(b'503', b'200')], counts)
    assert counts['records'] == 1


def test_a_record_the_sink_could_not_write_is_a_finding():
    def wrong_types(text):
        return logs.decode_json_log(text)._replace(status='503')
    target = Target('wrong', wrong_types, LogRecord, 'decode.logs', None)
    with pytest.raises(harness.Finding, match='cannot be written'):
        harness.check_lines(target, [
            b'{"timestamp":"2026-01-01T00:00:00Z","service":"a"}'],
            harness.Counts())


class _LenientBlocks(logs_columnar.BlockDecoder):
    """A columnar reader that accepts a status the reference refuses."""

    def decode(self, data, bounds=None):
        lines = data.split(b'\n')
        columns, dead, count = self.decode_each(
            [line.replace(b'"status":700', b'"status":500') for line in lines])
        return columns, dead, count


def test_a_columnar_reader_that_disagrees_is_a_finding():
    target = Target('lenient', logs.decode_json_log, LogRecord, 'decode.logs',
                    strategies.json_log_lines(),
                    lambda d: _LenientBlocks(d, 'decode.logs'))
    good = b'{"timestamp":"2026-01-01T00:00:00Z","service":"a","status":200}'
    harness.check_lines(target, [good], harness.Counts())
    with pytest.raises(harness.Finding, match='columnar reader'):
        harness.check_lines(target, [good.replace(b'200', b'700')],
                            harness.Counts())


def test_refusals_are_dead_letters_not_findings():
    def refuse(text):
        raise DecodeError('no')
    target = Target('refuses', refuse, LogRecord, 'decode.logs', None)
    counts = harness.Counts()
    harness.check_lines(target, [b'a b', b'\xff'], counts)
    assert counts['dead_letters'] == counts['inputs'] > 2
