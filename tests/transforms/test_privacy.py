"""Tests for transforms.privacy: masking and keyed hashing of personal data."""
import hashlib
import hmac
import ipaddress
import pathlib
import pickle
import re
import time

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.deadletter import DeadLetter
from transforms.logs.records import LogRecord
from transforms.privacy import Masker, MaskFields

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LOGHUB = REPO_ROOT.parent / 'shared' / 'loghub'
KEY = b'test-key'


def expected_hash(value: str, key: bytes = KEY) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:12]


@pytest.fixture
def masker():
    return Masker(mode='mask')


@pytest.fixture
def hasher():
    return Masker(mode='hash', key=KEY)


# ------------------------------------------------------------------------- IPv4

@pytest.mark.parametrize('text, expected', [
    ('client 10.0.0.1 connected', 'client <ip> connected'),
    ('rhost=218.188.2.4 user=root', 'rhost=<ip> user=root'),
    ('from 192.168.1.10:8080.', 'from <ip>:8080.'),
    ('[255.255.255.255] and (0.0.0.0)', '[<ip>] and (<ip>)'),
    ('a 1.2.3.4, b 5.6.7.8', 'a <ip>, b <ip>'),
    ('ends with 8.8.8.8.', 'ends with <ip>.'),
    ('from 62.99.164.82 (62.99.164.82.sh.example.at)',
     'from <ip> (<ip>.sh.example.at)'),
    ('ip.10.1.2.3 x', 'ip.<ip> x'),
    ('not IPv6 1.2.3.4:: either', 'not IPv6 <ip>:: either'),
])
def test_ipv4_masked(masker, text, expected):
    assert masker.mask(text) == expected


@pytest.mark.parametrize('text', [
    'version 1.2.3.4.5 released',
    'bad 999.1.1.1 address',
    '256.1.1.1',
    '1.2.3',
    'v1.2.3',
    'build 10.0.0',
    'pi is 3.14159',
    'ratio 0.5.',
    'leading zeros 010.000.000.001',
    'sha 1.2.3.4a',
])
def test_not_ipv4_left_alone(masker, text):
    assert masker.mask(text) == text


# ------------------------------------------------------------------------- IPv6

@pytest.mark.parametrize('text, expected', [
    ('from 2001:db8::1 ok', 'from <ip> ok'),
    ('loopback ::1', 'loopback <ip>'),
    ('full 2001:0db8:85a3:0000:0000:8a2e:0370:7334.', 'full <ip>.'),
    ('mapped ::ffff:10.0.0.1 here', 'mapped <ip> here'),
    ('url http://[2001:db8::2]:8443/x', 'url http://[<ip>]:8443/x'),
    ('link-local fe80::1%eth0 up', 'link-local <ip> up'),
    ('upper 2001:DB8::A', 'upper <ip>'),
    ('client=2001:db8::1, next', 'client=<ip>, next'),
])
def test_ipv6_masked(masker, text, expected):
    assert masker.mask(text) == expected


@pytest.mark.parametrize('text', [
    'at 12:30:45 the job ran',
    'at 10:00:00.123 exactly',
    '2026-01-05T10:00:00Z',
    'Jun 14 15:16:01 combo sshd',
    'mac 00:1a:2b:3c:4d:5e',
    'hex deadbeef:cafe',
    'std::vector<int> and Foo::Bar',
    'separator :: between',
    'ratio 16:9 and 1:2:3',
    'sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
    'v1.2.3',
])
def test_not_ipv6_left_alone(masker, text):
    assert masker.mask(text) == text


@pytest.mark.parametrize('candidate', [
    '12:30:45', '1:2:3:4:5:6:7', '00:1a:2b:3c:4d:5e', '1:2:3:4:5:6:7:8', '::1',
    '2001:db8::1', '::ffff:1.2.3.4', 'fe80::', '1::2::3', 'g::1', '12345::1',
    '2001:db8:0:0:0:0:2:1', 'abcd:ef01::',
])
def test_ipv6_masked_exactly_when_ipaddress_accepts(masker, candidate):
    try:
        ipaddress.IPv6Address(candidate)
        is_address = True
    except ValueError:
        is_address = False
    masked = masker.mask(f'x {candidate} y')
    assert (masked == 'x <ip> y') == is_address, masked
    if not is_address:
        assert candidate.split(':')[0] in masked


# ------------------------------------------------------------- e-mail and tokens

@pytest.mark.parametrize('text, expected', [
    ('user bob@example.com logged in', 'user <email> logged in'),
    ('<alice.smith+tag@mail.example.co.uk>', '<<email>>'),
    ('to=first_last@sub-domain.example.org, cc', 'to=<email>, cc'),
    ('mailto:x@y.io', 'mailto:<email>'),
])
def test_email_masked(masker, text, expected):
    assert masker.mask(text) == expected


@pytest.mark.parametrize('text', ['@handle', 'user@localhost', 'a @ b.com', 'x@.com'])
def test_not_email_left_alone(masker, text):
    assert masker.mask(text) == text


JWT = ('eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.'
       'eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.'
       'SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c')


@pytest.mark.parametrize('text, expected', [
    ('Authorization: Bearer xyz', 'Authorization: Bearer <token>'),
    ('authorization: bearer abc.DEF-ghi_jkl~m+n/o==', 'authorization: bearer <token>'),
    ('BEARER 0123456789abcdef end', 'BEARER <token> end'),
    (f'Authorization: Bearer {JWT}', 'Authorization: Bearer <token>'),
    (f'token={JWT}&x=1', 'token=<token>&x=1'),
    (f'"{JWT}"', '"<token>"'),
    ('Authorization: Basic dXNlcjpwYXNzd29yZA==', 'Authorization: Basic <token>'),
])
def test_tokens_masked(masker, hasher, text, expected):
    assert masker.mask(text) == expected
    assert hasher.mask(text) == expected      # tokens are never hashed


def test_token_content_does_not_leak(hasher):
    masked = hasher.mask(f'GET /?jwt={JWT} from 10.0.0.1 Bearer secret-123')
    assert 'secret-123' not in masked and 'eyJ' not in masked
    assert 'SflKxwRJ' not in masked and '10.0.0.1' not in masked


# --------------------------------------------------------------------- hash mode

def test_hash_mode_uses_keyed_hmac(hasher):
    text = 'bob@example.com from 10.0.0.1 and 2001:db8::1'
    assert hasher.mask(text) == (
        f'<email:{expected_hash("bob@example.com")}> from '
        f'<ip:{expected_hash("10.0.0.1")}> and <ip:{expected_hash("2001:db8::1")}>')


def test_hash_is_stable_and_key_dependent(hasher):
    text = 'client 203.0.113.5'
    assert hasher.mask(text) == hasher.mask(text) == Masker('hash', KEY).mask(text)
    other = Masker('hash', key=b'another key').mask(text)
    assert other != hasher.mask(text)
    assert re.fullmatch(r'client <ip:[0-9a-f]{12}>', other)
    assert Masker('hash', key='test-key').mask(text) == hasher.mask(text)


def test_hash_distinguishes_clients(hasher):
    ips = [f'10.0.{i}.{j}' for i in range(4) for j in range(250)]
    masked = {hasher.mask(ip) for ip in ips}
    assert len(masked) == len(ips)


def test_hash_canonicalises_spellings(hasher):
    one = hasher.mask('2001:db8::1')
    assert hasher.mask('2001:0DB8:0000:0000:0000:0000:0000:0001') == one
    assert hasher.mask('::ffff:10.0.0.1') == hasher.mask('10.0.0.1')
    assert hasher.mask('Bob@Example.COM') == hasher.mask('bob@example.com')


def test_hash_placeholders_are_not_masked_again(hasher):
    once = hasher.mask('a 10.0.0.1 b 2001:db8::1 c x@example.com')
    assert hasher.mask(once) == once


# --------------------------------------------------------------------- the class

@pytest.mark.parametrize('kwargs', [
    {'mode': 'hash'}, {'mode': 'hash', 'key': b''}, {'mode': 'hash', 'key': ''},
    {'mode': 'encrypt', 'key': KEY}, {'mode': 'hash', 'key': 42},
])
def test_masker_refuses_bad_options(kwargs):
    with pytest.raises(ValueError):
        Masker(**kwargs)


def test_default_mode_is_hash():
    assert Masker(key=KEY).mask('10.0.0.1') == f'<ip:{expected_hash("10.0.0.1")}>'


def test_masker_is_picklable(hasher):
    text = 'bob@example.com 10.0.0.1 Bearer t'
    for restored in (pickle.loads(pickle.dumps(hasher)),
                     pickler.loads(pickler.dumps(hasher))):
        assert restored.mask(text) == hasher.mask(text)


def test_repr_hides_key(hasher):
    assert 'test-key' not in repr(hasher)


@pytest.mark.parametrize('text', ['', 'nothing personal here', None])
def test_mask_leaves_clean_text(masker, text):
    assert masker.mask(text) == text


def test_mask_is_linear_on_pathological_text(masker):
    texts = ['a' * 500_000 + '@', '1.' * 300_000, ':' * 500_000, 'a:' * 300_000,
             'eyJ' * 200_000, 'bearer ' * 100_000, 'a.' * 300_000 + '@b',
             ('ab' * 40 + '@') * 5000]
    for text in texts:
        start = time.perf_counter()
        masker.mask(text)
        assert time.perf_counter() - start < 5.0


def test_loghub_linux_addresses_masked(masker):
    path = LOGHUB / 'Linux' / 'Linux_2k.log'
    if not path.is_file():
        pytest.skip('Loghub sample Linux not found next to the repository '
                    '(expected shared/loghub/Linux/Linux_2k.log)')
    dotted = re.compile(r'(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])')
    checked = 0
    for line in path.read_text(encoding='utf-8').splitlines():
        masked = masker.mask(line)
        for candidate in dotted.findall(line):
            try:
                ipaddress.IPv4Address(candidate)
            except ValueError:
                continue
            assert candidate not in masked, line
            checked += 1
        # Clock times in the syslog header survive.
        assert masked[:15] == line[:15]
    assert checked > 100


# -------------------------------------------------------------------- MaskFields

def log_record(message, host='web-1'):
    return LogRecord(event_time=Timestamp(1767607200), service='web', level='INFO',
                     status=200, latency_ms=1.0, host=host, message=message,
                     format='json')


def test_mask_fields_masks_text_fields_and_keeps_timestamps(hasher):
    records = [log_record('login bob@example.com from 10.0.0.1'),
               log_record('nothing to hide', host='10.0.0.9')]
    with test_pipeline.TestPipeline() as p:
        masked = (p | beam.Create(records)
                  | beam.Map(lambda r: TimestampedValue(r, r.event_time))
                  .with_output_types(LogRecord)
                  | MaskFields(hasher, ('message',)))
        assert masked.element_type is LogRecord
        assert_that(masked, equal_to([
            log_record(f'login <email:{expected_hash("bob@example.com")}> from '
                       f'<ip:{expected_hash("10.0.0.1")}>'),
            log_record('nothing to hide', host='10.0.0.9'),
        ]), label='records')
        stamps = masked | beam.Map(lambda r, t=beam.DoFn.TimestampParam: t)
        assert_that(stamps, equal_to([Timestamp(1767607200)] * 2), label='stamps')


def test_mask_fields_masks_bytes_and_keeps_invalid_utf8(masker):
    raw = b'\xff\xfe token Bearer abc from 10.0.0.1 \xc3'
    letter = DeadLetter(raw=raw, stage='decode', reason='not UTF-8',
                        error_time=Timestamp(1), source='')
    with test_pipeline.TestPipeline() as p:
        masked = (p | beam.Create([letter]).with_output_types(DeadLetter)
                  | MaskFields(masker, 'raw'))
        assert_that(masked, equal_to([letter._replace(
            raw=b'\xff\xfe token Bearer <token> from <ip> \xc3')]))


def test_mask_fields_needs_field_names(masker):
    with pytest.raises(ValueError):
        MaskFields(masker, ())
