"""The CMCD decoder against data no one here wrote.

* every case of the cmcd-validator (173 cases; the 38 generic ones in their
  query, header and JSON forms): valid or not, with the same error kinds on
  the same keys, the same warnings and the same decoded values;
* every example of CTA-5004-B section 8 (request and event mode), with the
  values the specification states;
* the decode fixtures of common-media-library (a v2 string with every common
  key and custom keys, its URL form and its header form);
* real dash.js and Bitmovin player requests;
* a property test: member by member parsing agrees with http-sfv parsing the
  whole dictionary.
"""
import ast
import json
import re
import urllib.parse

import http_sfv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import SHARED
from transforms.decode import DecodeError
from transforms.video import cmcd

VALIDATOR = SHARED / 'cmcd' / 'cmcd-validator'
LIBRARY = SHARED / 'cmcd' / 'common-media-library' / 'data'
needs_shared = pytest.mark.skipif(
    not VALIDATOR.is_dir() or not LIBRARY.is_dir(),
    reason='the CMCD test data (../shared/cmcd) is not present')


def read_ts(path):
    """The ``export const NAME = literal`` values of a TypeScript fixture
    (strings, arrays and object literals only)."""
    text = re.sub(r'/\*\*.*?\*/', '', path.read_text(encoding='utf-8'),
                  flags=re.S)
    out = {}
    for m in re.finditer(r'export const (\w+)(?:\s*:\s*[^=]+)?\s*=\s*', text):
        end = text.find('\nexport const', m.end())
        body = text[m.end():end if end >= 0 else len(text)].strip()
        body = body.replace(' as const', '')
        if body.startswith('`'):
            continue                      # built in code; rebuilt below
        body = re.sub(r'(^|\n)(\s*)([A-Za-z_]\w*)\s*:', r"\1\2'\3':", body)
        body = re.sub(r'\btrue\b', 'True', body)
        out[m.group(1)] = ast.literal_eval(body)
    return out


def validator_cases():
    if not VALIDATOR.is_dir():
        return []
    cases = []
    for path in sorted((VALIDATOR / 'testCases').glob('*.json')):
        (name, items), = json.loads(path.read_text(encoding='utf-8')).items()
        for i, case in enumerate(items):
            for form in ('query', 'header', 'json'):
                if form in case:
                    cases.append(pytest.param(
                        case, form, id=f'{name}-{i}-{form}'))
    return cases


def config_of(case):
    config = case.get('config') or {}
    custom = None
    if 'customKey' in config:
        custom = {c['key']: (c['type'], c.get('headerType'))
                  for c in config['customKey']}
    specific = tuple(config['specificKey']) if 'specificKey' in config \
        else None
    return cmcd.Config(custom, specific)


DECODERS = {'query': cmcd.decode_query, 'header': cmcd.decode_headers,
            'json': cmcd.decode_json}


@needs_shared
def test_all_validator_cases_are_here():
    ids = {p.id.rsplit('-', 1)[0] for p in validator_cases()}
    assert len(ids) == 173


@needs_shared
@pytest.mark.parametrize('case, form', validator_cases())
def test_validator_case(case, form):
    expected = case['output']
    try:
        decoded = DECODERS[form](case[form], config_of(case))
    except cmcd.CmcdError as e:
        assert not expected['valid'], f'refused: {e}'
        got = sorted((x.kind, x.key) for x in cmcd.errors_of(e))
        want = sorted((x['type'], x.get('key')) for x in expected['errors'])
        # The validator puts a sentence where a key would be for a request
        # with no CMCD headers at all; the kind is what matters there.
        want = [(k, None if key and ' ' in key else key) for k, key in want]
        assert got == want
        assert all(str(e) for e in cmcd.errors_of(e))
        return
    assert expected['valid'], f'accepted: {decoded.data}'
    assert decoded.data == expected['parsedData']
    assert sorted({w for w, _ in decoded.warnings}) == sorted(
        {w['type'] for w in expected['warnings']})


# ------------------------------------------------------------ CTA-5004-B


@pytest.fixture(scope='module')
def examples():
    if not LIBRARY.is_dir():
        pytest.skip('the CMCD test data (../shared/cmcd) is not present')
    return read_ts(LIBRARY / 'CTA_5004_B_EXAMPLES.ts')


def every_example(examples):
    for name, value in examples.items():
        if name.endswith('_HEADERS'):
            continue
        values = value if isinstance(value, list) else \
            list(value.values()) if isinstance(value, dict) else [value]
        for text in values:
            yield name, text


def test_every_specification_example_is_valid(examples):
    names = set()
    for name, text in every_example(examples):
        decoded = cmcd.decode_dictionary(text)
        names.add(name)
        assert decoded.data.get('v') == 2, name
    assert names == {f'EX_8_1_{i}' for i in range(1, 9)} | {
        f'EX_8_2_{i}' for i in range(1, 9)}


def test_request_mode_examples_decode_to_the_specification_values(examples):
    d = cmcd.decode_dictionary(examples['EX_8_1_1']).data
    assert d == {
        'bl': [2000], 'br': [cmcd.SfItem(3000, ('v',))],
        'cid': 'content-id-123', 'd': 4000, 'dl': 1000, 'mtp': [15000],
        'nor': ['next-seg.mp4'], 'ot': 'v', 'rtp': 12000, 'sf': 'd',
        'sid': 'session-id-123', 'st': 'v', 'sta': 'p',
        'tb': [cmcd.SfItem(6000, ('v',))], 'v': 2}
    # The same data as the four headers decodes to the same values.
    headers = cmcd.decode_headers(list(examples['EX_8_1_1_HEADERS'].items()))
    assert headers.data == d
    first, *_, last = [cmcd.decode_dictionary(t).data
                       for t in examples['EX_8_1_4']]
    assert first['ot'] == 'm' and first['su'] is True
    assert last['sta'] == 'p' and last['msd'] == 200 and last['bl'] == [4000]
    failed = cmcd.decode_dictionary(examples['EX_8_1_5'][1]).data
    assert failed['sta'] == 'f'
    assert failed['ec'] == ['DRM_NOT_SUPPORTED', 'PLAYBACK_FAILED']
    stall = cmcd.decode_dictionary(examples['EX_8_1_6'][1]).data
    assert stall['bl'] == [cmcd.SfItem(0, ('v',)), cmcd.SfItem(2000, ('a',))]
    assert stall['bs'] is True and stall['sta'] == 'r'
    full = cmcd.decode_dictionary(examples['EX_8_1_8']).data
    assert full['br'] == [cmcd.SfItem(3000, ('v',)), cmcd.SfItem(164, ('a',))]
    assert cmcd.video_value(full['br']) == 3000
    assert full['pr'] == 1.1 and full['st'] == 'l' and full['sn'] == 0
    assert full['ec'] == ['2001'] and full['cs'] == 'g48djn236sk2'
    assert full['bg'] is True and full['nr'] is True


def test_event_mode_examples_decode_to_the_specification_values(examples):
    reports = [cmcd.decode_dictionary(t).data for t in examples['EX_8_2_2']]
    assert [r['sn'] for r in reports] == [1, 2, 3, 4, 5]
    assert [r['sta'] for r in reports] == ['s', 'p', 'p', 'p', 'e']
    # 8.2.2: the media start delay, and a 720 ms stall of the video.
    assert reports[1]['ts'] == 1764752430000 and reports[1]['msd'] == 812
    assert reports[2]['ts'] == 1764752460000
    assert reports[2]['bsd'] == [cmcd.SfItem(720, ('v',))]
    assert cmcd.total_value(reports[2]['bsd']) == 720
    assert reports[2]['ec'] == ['MEDIA_ERR_NETWORK']
    assert cmcd.video_value(reports[1]['br']) == 4200
    # 8.2.5: rebuffering from 1764269150889 until playing at 1764269152389,
    # the 1500 ms that bsd reports.
    r, p = [cmcd.decode_dictionary(t).data for t in examples['EX_8_2_5']]
    assert (r['e'], r['sta'], p['sta']) == ('ps', 'r', 'p')
    assert p['ts'] - r['ts'] == cmcd.total_value(p['bsd']) == 1500
    rr = cmcd.decode_dictionary(examples['EX_8_2_3']).data
    assert (rr['e'], rr['rc'], rr['ttfb'], rr['ttlb']) == ('rr', 200, 180, 200)
    assert rr['url'] == 'video/segment-5.m4v'
    err = cmcd.decode_dictionary(examples['EX_8_2_4']).data
    assert err['e'] == 'e' and err['ec'] == ['CODEC_NOT_SUPPORTED']
    assert cmcd.decode_dictionary(examples['EX_8_2_6']).data['sta'] == 'k'
    assert [cmcd.decode_dictionary(t).data['e'] for t in
            examples['EX_8_2_8']] == ['abs', 'as', 'ae', 'abe']


# ------------------------------------------------------- library fixtures


@pytest.fixture(scope='module')
def library():
    if not LIBRARY.is_dir():
        pytest.skip('the CMCD test data (../shared/cmcd) is not present')
    out = {}
    for name in ('CMCD_STRING_REQUEST', 'CMCD_OUTPUT_REQUEST', 'CMCD_OUTPUT',
                 'CMCD_HEADERS'):
        out.update(read_ts(LIBRARY / f'{name}.ts'))
    # CMCD_QUERY.ts: `CMCD=${encodeURIComponent(CMCD_STRING_REQUEST)}`.
    out['CMCD_QUERY'] = 'CMCD=' + urllib.parse.quote(
        out['CMCD_STRING_REQUEST'], safe="-_.!~*'()")
    return out


def test_the_library_string_decodes_to_its_output(library):
    decoded = cmcd.decode_dictionary(library['CMCD_STRING_REQUEST'])
    assert decoded.data == library['CMCD_OUTPUT_REQUEST']
    assert decoded.data['com.example-quote'] == '"Quote"'
    assert decoded.data['com.example-exists'] is True


def test_the_library_query_decodes_to_its_output(library):
    url = 'https://cdn.example/seg.m4v?' + library['CMCD_QUERY']
    assert cmcd.decode_query(url).data == library['CMCD_OUTPUT']


def test_the_library_headers_decode_to_its_output_but_an_unquoted_cs(library):
    """The library decodes ``cs=123456`` as the string '123456' because cs
    is a String key; by the standard that member is an Integer, the wrong
    type (as an unquoted sid is for the validator), so it is refused.  With
    cs sent as the String the standard asks for, the headers decode to the
    library's output."""
    headers = dict(library['CMCD_HEADERS'])
    with pytest.raises(cmcd.CmcdError) as err:
        cmcd.decode_headers(list(headers.items()))
    assert (err.value.kind, err.value.key) == ('incorrect-format', 'cs')
    headers['CMCD-Request'] = headers['CMCD-Request'].replace(
        'cs=123456', 'cs="123456"')
    assert cmcd.decode_headers(list(headers.items())).data == \
        library['CMCD_OUTPUT']


# ----------------------------------------------------------- real players

def _lines(name):
    path = VALIDATOR / 'examples' / name
    return [line.strip() for line in path.read_text(
        encoding='utf-8').splitlines() if line.strip()]


@needs_shared
def test_dash_js_requests_decode():
    urls = _lines('cmcd-data-samples-queries.txt')
    decoded = [cmcd.decode_query(u).data for u in urls]
    assert len(decoded) == 20
    assert all(d['sid'] == 'b248658d-1d1a-4039-91d0-8c08ba597da5'
               for d in decoded)
    assert decoded[1]['br'] == 14931 and decoded[1]['bl'] == 11500


@needs_shared
def test_dash_js_headers_and_json_samples_decode():
    blocks = [b for b in (VALIDATOR / 'examples' /
                          'cmcd-data-samples-header.txt').read_text(
        encoding='utf-8').split('GET ') if 'CMCD-' in b]
    assert len(blocks) == 20
    for block in blocks:
        assert cmcd.decode_headers(block).data['st'] == 'v'
    for line in _lines('cmcd-data-samples-json.txt'):
        cmcd.decode_json(line)


@needs_shared
@pytest.mark.parametrize('name', ['cmcd-bitmovin-url.log',
                                  'cmcd-bitmovin-headers.log'])
def test_bitmovin_requests_with_fractional_buffer_lengths_are_refused(name):
    """Bitmovin Player 8.100 sends ``bl`` (and sometimes ``mtp``) with a
    fraction (``bl=3993.8321995464853``): CMCD types both as Integers, so
    those requests are refused, naming the key; the others decode."""
    ok, refused = 0, {}
    for line in _lines(name):
        if 'CMCD' not in line:
            continue
        try:
            if line.startswith('{'):
                cmcd.decode_headers(re.findall(r"(CMCD-\w+): '([^']*)'",
                                               line))
            else:
                cmcd.decode_query(line)
            ok += 1
        except cmcd.CmcdError as e:
            refused[e.key.split('=')[0]] = refused.get(
                e.key.split('=')[0], 0) + 1
            assert e.kind == 'incorrect-format'
    assert ok >= 4
    assert set(refused) <= {'bl', 'mtp'} and refused['bl'] > 300


@needs_shared
def test_a_bare_query_argument_is_read_or_refused_for_its_real_reason():
    """The job's auto format meets Bitmovin's request log as it is (bare
    ``CMCD=...`` query arguments): a request with ``ts`` (CMCD v2 request
    mode) is a report; one without is refused for want of an event time,
    not for its form; a fractional ``bl``/``mtp`` for its type."""
    from transforms.video import decoders
    decode = decoders.make_decoder('auto')
    no_time = typed = 0
    for line in _lines('cmcd-bitmovin-url.log'):
        if not line.startswith('CMCD='):
            continue
        try:
            decode(line)
        except cmcd.CmcdError as e:
            assert e.kind == 'incorrect-format' and \
                e.key.split('=')[0] in ('bl', 'mtp'), str(e)
            typed += 1
        except DecodeError as e:
            assert 'without ts' in str(e) and cmcd.decode_query(line)
            no_time += 1
    assert no_time >= 4 and typed > 300
    report = decode('CMCD=' + urllib.parse.quote(
        'sid="s1",cid="c",ts=1764269150889,sta=p,v=2'))
    assert (report.session_id, report.ts_ms, report.state, report.format) \
        == ('s1', 1764269150889, 'p', 'request')


# ------------------------------------------------------------- property

_key = st.from_regex(r'[a-z][a-z0-9_]{0,5}', fullmatch=True)
_item = st.one_of(
    st.integers(-10**15 + 1, 10**15 - 1),
    st.booleans(),
    st.from_regex(r'[A-Za-z*][A-Za-z0-9:/!#$%&\'*+.^_`|~-]{0,8}',
                  fullmatch=True).map(http_sfv.Token),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e),
            max_size=12))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_key, st.one_of(_item, st.lists(_item, max_size=3)),
                       min_size=1, max_size=6))
def test_member_parsing_agrees_with_http_sfv(members):
    whole = http_sfv.Dictionary()
    for key, value in members.items():
        whole[key] = http_sfv.InnerList(value) if isinstance(value, list) \
            else http_sfv.Item(value)
    text = str(whole)
    parsed = cmcd.parse_members(text)
    assert [p.key for p in parsed] == list(members)
    for p in parsed:
        want = members[p.key]
        want = [str(v) if isinstance(v, http_sfv.Token) else v
                for v in want] if isinstance(want, list) else \
            (str(want) if isinstance(want, http_sfv.Token) else want)
        assert p.value == want
