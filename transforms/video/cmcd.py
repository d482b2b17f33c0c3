"""Common Media Client Data (CTA-5004, CMCD v1; CTA-5004-B, CMCD v2) decoding.

CMCD travels in three forms, all decoded here to one ``dict`` of key -> value:

* a Structured Field *dictionary* (RFC 8941): the ``CMCD=`` query argument of a
  media request (URL-encoded), the four ``CMCD-Object/-Request/-Session/
  -Status`` headers, or the body of an event-mode report (CMCD v2), e.g.
  ``bl=(0),cid="c",e=ps,sid="s",sta=r,ts=1764269150889,v=2``;
* CMCD's JSON form, one object.

The syntax of each dictionary member is parsed by ``http_sfv`` (a maintained
RFC 8941 implementation): a key alone is true, strings are quoted, tokens are
bare, inner lists carry parameters (``br=(4200;v 256;a)``).  The members are
split here, not by ``http_sfv``, so that a broken member is reported under its
own key (and duplicated keys, which RFC 8941 silently collapses, are refused
as CMCD requires).

Then each key is checked against its type and its reserved values
(:data:`KEYS`).  A payload the standard does not allow raises
:class:`CmcdError`, whose ``kind`` is one of :data:`ERROR_KINDS` (the names
the CMCD validator uses for the same defects) and whose message is one line.

Values: integers, decimals, booleans and strings as Python values; tokens as
``str``; an inner list as a ``list`` whose members are plain values, or
:class:`SfItem` ``(value, params)`` where a member carries parameters (``v``
for video, ``a`` for audio).  ``nor`` strings stay as sent (percent-encoded in
CMCD v1).
"""
import decimal
import json
import re
import typing
import urllib.parse

import http_sfv

from transforms.decode import DecodeError

ERROR_KINDS = (
    'incorrect-format', 'invalid-value', 'wrong-type-value', 'unnecessary-key',
    'duplicate-key', 'parameter-encoding', 'no-CMCD-request', 'query-malformed',
    'no-ampersand-between-requests:', 'duplicated-header', 'empty-header',
    'invalid-json', 'unknown-key', 'unknown-specific-key',
    'invalid-custom-key', 'wrong-custom-type', 'invalid-header')

HEADERS = ('CMCD-Object', 'CMCD-Request', 'CMCD-Session', 'CMCD-Status')
OBJECT, REQUEST, SESSION, STATUS = HEADERS

# Types: int (Integer >= 0), ilist (Integer, or an inner list of Integers with
# parameters, CMCD v2), bool (true only: a key alone), str (String), slist
# (String, or an inner list of Strings), token (Token of a reserved set),
# dec (Decimal or Integer >= 0), nrr ("start-end" String).


class KeySpec(typing.NamedTuple):
    type: str
    header: str
    values: typing.Optional[frozenset] = None   # reserved token values
    max_len: typing.Optional[int] = None        # strings


def _k(type_, header, values=None, max_len=None):
    return KeySpec(type_, header, frozenset(values) if values else None,
                   max_len)


OBJECT_TYPES = ('m', 'a', 'v', 'av', 'i', 'c', 'tt', 'k', 'o')
STREAMING_FORMATS = ('d', 'h', 's', 'o')
STREAM_TYPES = ('v', 'l')
# CTA-5004-B player states: starting, playing, seeking, rebuffering, paused,
# waiting, ended, fatal error; and the event types of event mode.
PLAYER_STATES = ('s', 'p', 'k', 'r', 'a', 'w', 'e', 'f')
EVENT_TYPES = ('ps', 'e', 't', 'c', 'b', 'm', 'um', 'pe', 'pc', 'rr', 'sk',
               'abs', 'abe', 'as', 'ae')

KEYS = {
    # CMCD v1 (CTA-5004)
    'br': _k('ilist', OBJECT), 'd': _k('int', OBJECT),
    'ot': _k('token', OBJECT, OBJECT_TYPES), 'tb': _k('ilist', OBJECT),
    'bl': _k('ilist', REQUEST), 'dl': _k('int', REQUEST),
    'mtp': _k('ilist', REQUEST), 'nor': _k('slist', REQUEST),
    'nrr': _k('nrr', REQUEST), 'su': _k('bool', REQUEST),
    'cid': _k('str', SESSION, max_len=64), 'pr': _k('dec', SESSION),
    'sf': _k('token', SESSION, STREAMING_FORMATS),
    'sid': _k('str', SESSION, max_len=64),
    'st': _k('token', SESSION, STREAM_TYPES), 'v': _k('int', SESSION),
    'bs': _k('bool', STATUS), 'rtp': _k('int', STATUS),
    # CMCD v2 (CTA-5004-B)
    'ab': _k('ilist', OBJECT), 'tpb': _k('ilist', OBJECT),
    'lb': _k('ilist', OBJECT), 'tab': _k('ilist', OBJECT),
    'lab': _k('ilist', OBJECT), 'url': _k('str', OBJECT),
    'pb': _k('ilist', REQUEST), 'tbl': _k('ilist', REQUEST),
    'ltc': _k('int', REQUEST), 'rc': _k('int', REQUEST),
    'sn': _k('int', REQUEST), 'sta': _k('token', REQUEST, PLAYER_STATES),
    'ttfb': _k('int', REQUEST), 'ttfbb': _k('int', REQUEST),
    'ttlb': _k('int', REQUEST), 'cmsdd': _k('str', REQUEST),
    'cmsds': _k('str', REQUEST), 'smrt': _k('str', REQUEST),
    'df': _k('int', REQUEST), 'cs': _k('str', REQUEST),
    'ts': _k('int', REQUEST), 'dfa': _k('int', REQUEST),
    'msd': _k('int', SESSION),
    'bsd': _k('ilist', STATUS), 'bsa': _k('ilist', STATUS),
    'bsda': _k('ilist', STATUS), 'cdn': _k('str', STATUS),
    'bg': _k('bool', STATUS), 'pt': _k('int', STATUS),
    'ec': _k('slist', STATUS), 'e': _k('token', STATUS, EVENT_TYPES),
    'nr': _k('bool', STATUS), 'h': _k('str', STATUS),
}

# A custom key: a reverse-DNS prefix, a hyphen, a name (CTA-5004 3.3).
_CUSTOM_KEY = re.compile(r'[a-z0-9]+(?:\.[a-z0-9]+)*-[a-z0-9_*-]*[a-z0-9_*]')
_SF_KEY = re.compile(r'[a-z*][a-z0-9_.*-]*')
_NRR = re.compile(r'(?:\d+-\d*|-\d+)')
_URI_SCHEME = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*:')
# Characters a URL-encoded v1 "nor" may hold (RFC 3986 unreserved, and %).
_ENCODED = re.compile(r'[A-Za-z0-9._~%-]*')
# Characters that may not appear raw in a query (RFC 3986): the CMCD value of
# a query argument must be percent-encoded.
_QUERY_UNSAFE = re.compile(r'[" <>\\^`{|}]')
_PERCENT_BAD = re.compile(r'%(?![0-9A-Fa-f]{2})')


class CmcdError(DecodeError):
    """A payload CMCD does not allow; ``kind`` names the defect."""

    def __init__(self, kind, key=None, detail=''):
        self.kind = kind
        self.key = key
        self.detail = detail
        where = f' key {key}' if key else ''
        super().__init__(f'CMCD {kind}{where}: {detail}' if detail
                         else f'CMCD {kind}{where}')


class SfItem(typing.NamedTuple):
    """A member of an inner list that carries parameters, e.g. ``4200;v``."""
    value: typing.Any
    params: tuple           # parameter keys in order, e.g. ('v',)


class Decoded(typing.NamedTuple):
    data: dict               # key -> value, in the order sent
    warnings: list           # (kind, key) the validator would warn about


class Config(typing.NamedTuple):
    """What a receiver declares (the validator's configuration): custom keys
    ``{name: (type, header)}`` and, if given, the only keys to check."""
    custom: typing.Optional[dict] = None
    specific: typing.Optional[tuple] = None


CUSTOM_TYPES = ('boolean', 'number', 'string', 'token')

# ------------------------------------------------------------------ members


def split_members(text: str) -> list:
    """Top-level members of a dictionary (commas outside quoted strings),
    whitespace around them removed."""
    members, start, quoted, i = [], 0, False, 0
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == '\\':
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ',':
            members.append(text[start:i].strip(' \t'))
            start = i + 1
        i += 1
    members.append(text[start:].strip(' \t'))
    return members


def _plain(value):
    if isinstance(value, http_sfv.types.Token):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _member_value(parsed):
    if isinstance(parsed, http_sfv.InnerList):
        out = []
        for item in parsed:
            value = _plain(item.value)
            params = tuple(item.params.keys())
            out.append(SfItem(value, params) if params else value)
        return out
    return _plain(parsed.value)


class _Raw(typing.NamedTuple):
    key: str                 # the key, or the whole member if it has none
    name: str                # the key name for filtering ('' if none)
    value: typing.Any        # decoded value (None if broken)
    text: str                # the value as sent
    kind: str                # 'token', 'string', 'integer', 'decimal',
                             # 'boolean', 'innerlist', 'bytes', 'broken'


def _kind_of(parsed, raw_text):
    if isinstance(parsed, http_sfv.InnerList):
        return 'innerlist'
    value = parsed.value
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, http_sfv.types.Token):
        return 'token'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, (float, decimal.Decimal)):
        return 'decimal'
    return 'bytes'


def parse_members(text: str) -> list:
    """A Structured Field dictionary -> list of :class:`_Raw`, one per member,
    broken members included (kind 'broken')."""
    out = []
    for member in split_members(text):
        key_m = _SF_KEY.match(member)
        name = key_m.group(0) if key_m else ''
        rest = member[key_m.end():] if key_m else member
        value_text = rest[1:] if rest.startswith('=') else ''
        try:
            if not member:
                raise ValueError('empty member')
            d = http_sfv.Dictionary()
            d.parse(member.encode('ascii'))
            if len(d) != 1:
                raise ValueError('not one member')
            (key, parsed), = d.items()
        except (ValueError, UnicodeEncodeError, KeyError, IndexError):
            out.append(_Raw(member, name, None, value_text, 'broken'))
            continue
        out.append(_Raw(key, key, _member_value(parsed), value_text,
                        _kind_of(parsed, value_text)))
    return out


# ------------------------------------------------------------------ checks


def _check_int(key, value, kind, json_form, allow_list):
    if kind == 'integer' or (json_form and type(value) is int):
        if value < 0:
            raise CmcdError('invalid-value', key, f'{value} is negative')
        return value
    if allow_list and (kind == 'innerlist' or
                       (json_form and isinstance(value, list))):
        items = []
        for item in value:
            number = item.value if isinstance(item, SfItem) else item
            if type(number) is not int:
                raise CmcdError('wrong-type-value' if json_form else
                                'incorrect-format', key,
                                'inner list members must be integers')
            if number < 0:
                raise CmcdError('invalid-value', key, f'{number} is negative')
            items.append(item)
        return items
    raise CmcdError('wrong-type-value' if json_form else 'incorrect-format',
                    key, f'must be an integer, got {_show(value)}')


def _show(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + '...'


def check_value(key, spec: KeySpec, value, kind, json_form=False, v1=True):
    """One reserved key's value -> the value; CmcdError if CMCD refuses it."""
    t = spec.type
    if t == 'bool':
        if value is True and (json_form or kind == 'boolean'):
            return True
        if value is False or (kind == 'token' and value == 'false'):
            raise CmcdError('unnecessary-key', key,
                            'a false boolean must not be sent')
        if kind == 'token' and value == 'true':
            raise CmcdError('incorrect-format', key,
                            'If the value is TRUE, the = and the value must '
                            'be omitted')
        raise CmcdError('wrong-type-value', key,
                        f'must be a boolean, got {_show(value)}')
    if t in ('int', 'ilist'):
        value = _check_int(key, value, kind, json_form, t == 'ilist')
        numbers = [i.value if isinstance(i, SfItem) else i
                   for i in (value if isinstance(value, list) else [value])]
        if key == 'bl' and any(n % 100 for n in numbers):
            raise CmcdError('invalid-value', key,
                            'must be rounded to the nearest 100 ms')
        if key == 'mtp' and numbers == [0]:
            raise CmcdError('unnecessary-key', key, 'a value of 0 is not sent')
        return value
    if t == 'dec':
        if kind in ('integer', 'decimal') or (
                json_form and type(value) in (int, float)):
            if value < 0:
                raise CmcdError('invalid-value', key, f'{value} is negative')
            return value
        raise CmcdError('wrong-type-value' if json_form else
                        'incorrect-format', key,
                        f'must be a decimal, got {_show(value)}')
    if t == 'token':
        if not (kind == 'token' or (json_form and type(value) is str)):
            raise CmcdError('wrong-type-value' if json_form else
                            'incorrect-format', key,
                            f'must be a token, got {_show(value)}')
        if spec.values is not None and value not in spec.values:
            raise CmcdError('invalid-value', key,
                            f'{value!r} is not one of '
                            f'{", ".join(sorted(spec.values))}')
        return value
    if t in ('str', 'nrr') or (t == 'slist' and (
            kind == 'string' or (json_form and type(value) is str))):
        if not (kind == 'string' or (json_form and type(value) is str)):
            raise CmcdError('wrong-type-value' if json_form else
                            'incorrect-format', key,
                            f'must be a string, got {_show(value)}')
        if spec.max_len and len(value) > spec.max_len:
            raise CmcdError('invalid-value', key,
                            f'longer than {spec.max_len} characters')
        if t == 'nrr' and not _NRR.fullmatch(value):
            raise CmcdError('incorrect-format', key,
                            'must be "start-end", "start-" or "-end" (bytes)')
        if key == 'nor':
            # CMCD v1: one relative path, URL-encoded.
            if not _ENCODED.fullmatch(value):
                raise CmcdError('parameter-encoding', key,
                                'the relative path must be URL-encoded')
            if _URI_SCHEME.match(urllib.parse.unquote(value)):
                raise CmcdError('incorrect-format', key,
                                'must be a relative path')
        return value
    if t == 'slist':
        if not (kind == 'innerlist' or (json_form and isinstance(value,
                                                                  list))):
            raise CmcdError('wrong-type-value' if json_form else
                            'incorrect-format', key,
                            f'must be a string or inner list of strings, '
                            f'got {_show(value)}')
        for item in value:
            item = item.value if isinstance(item, SfItem) else item
            if type(item) is not str or isinstance(item,
                                                   http_sfv.types.Token):
                raise CmcdError('incorrect-format', key,
                                'inner list members must be strings')
        return [i.value if isinstance(i, SfItem) else i for i in value]
    raise AssertionError(t)   # pragma: no cover


def _check_custom_type(key, declared, value, kind, json_form):
    if declared == 'boolean':
        if value is True or (json_form and value is False):
            return value
        if kind == 'token' and value == 'false':
            return False
        if kind == 'token' and value == 'true':
            raise CmcdError('incorrect-format', key,
                            'If the value is TRUE, the = and the value must '
                            'be omitted')
    elif declared == 'number':
        if kind in ('integer', 'decimal') or (
                json_form and type(value) in (int, float)):
            return value
    elif declared == 'string':
        if kind == 'string' or (json_form and type(value) is str):
            return value
    elif declared == 'token':
        if kind == 'token' or (json_form and type(value) is str):
            return value
    raise CmcdError('wrong-type-value', key,
                    f'must be a {declared}, got {_show(value)}')


def _check_config(config: Config):
    errors, warnings = [], []
    for key, (type_, header) in (config.custom or {}).items():
        if not _CUSTOM_KEY.fullmatch(key):
            warnings.append(('customkey-without-reversedns', key))
            errors.append(CmcdError('invalid-custom-key', key,
                                    'a custom key is PREFIX-NAME'))
            continue
        if '.' not in key.split('-', 1)[0]:
            warnings.append(('customkey-without-reversedns', key))
        if type_ not in CUSTOM_TYPES:
            errors.append(CmcdError('wrong-custom-type', key,
                                    f'unknown type {type_!r}'))
        elif header is not None and header not in HEADERS:
            errors.append(CmcdError('invalid-header', key,
                                    f'unknown header {header!r}'))
    for key in config.specific or ():
        if key not in KEYS:
            errors.append(CmcdError('unknown-specific-key', key,
                                    'not a CMCD key'))
    return errors, warnings


def _check_members(members, config: Config, json_form=False, header=None):
    """[(key, name, value, kind)] -> (data, errors, warnings)."""
    data, errors, warnings = {}, [], []
    custom = config.custom
    specific = set(config.specific) if config.specific else None
    for key, name, value, kind, text in members:
        if specific is not None and name not in specific and not (
                custom and name in custom):
            # Not checked; kept as sent.
            data.setdefault(name or key, text if kind == 'broken' else value)
            continue
        if kind == 'broken':
            errors.append(CmcdError('incorrect-format', key,
                                    'not a Structured Field member'))
            continue
        if key in data:
            errors.append(CmcdError('duplicate-key', key, 'sent twice'))
            continue
        spec = KEYS.get(key)
        try:
            if spec is not None:
                if header is not None and spec.header != header:
                    raise CmcdError(
                        'incorrect-format', key,
                        f'The key {key} does not go under the header {header}')
                data[key] = check_value(key, spec, value, kind, json_form)
            elif '-' in key:
                if custom is not None:
                    if key not in custom:
                        raise CmcdError('unknown-key', key,
                                        'custom key not declared')
                    data[key] = _check_custom_type(key, custom[key][0],
                                                   value, kind, json_form)
                elif not _CUSTOM_KEY.fullmatch(
                        key.lower() if json_form else key):
                    # (JSON names are not Structured Field keys: any case.)
                    raise CmcdError('incorrect-format', key,
                                    'a custom key is PREFIX-NAME')
                else:
                    data[key] = value
            else:
                raise CmcdError('incorrect-format', key, 'unknown key')
        except CmcdError as e:
            errors.append(e)
    if specific is None or custom is not None:
        # (The validator checks the order unless only some keys are to be
        # checked and no custom key is declared.)
        keys = [m[0] for m in members]
        if keys != sorted(keys):
            warnings.append(('no-alphabetical-order', None))
    return data, errors, warnings


def _finish(data, errors, warnings, config: Config):
    cfg_errors, cfg_warnings = _check_config(config)
    if cfg_errors:
        # A declaration that is itself wrong: nothing else is judged.
        errors, warnings = cfg_errors, cfg_warnings
    warnings = warnings + [w for w in cfg_warnings if w not in warnings]
    if errors:
        raise errors[0] if len(errors) == 1 else _Many(errors)
    declared = list(config.specific or ()) + list(config.custom or ())
    if any(k not in data for k in declared):
        warnings.append(('specific-keys-not-sent', None))
    if not config.specific:
        if 'sid' not in data:
            warnings.append(('no-sid-received', None))
        if data.get('v') == 1:
            warnings.append(('v-value', 'v'))
        if data.get('pr') == 1:
            warnings.append(('pr-value', 'pr'))
        if 'bl' in data and data.get('ot') not in ('a', 'v', 'av'):
            warnings.append(('bl-with-wrong-ot-value', 'bl'))
    return Decoded(data, warnings)


class _Many(CmcdError):
    """Several defects: the first names the error, all are kept."""

    def __init__(self, errors):
        first = errors[0]
        super().__init__(first.kind, first.key, first.detail)
        self.errors = errors


def errors_of(error: CmcdError) -> list:
    return getattr(error, 'errors', [error])


# ------------------------------------------------------------------ forms

def decode_dictionary(text: str, config: Config = Config()) -> Decoded:
    """A CMCD Structured Field dictionary (a report body, or a query value
    once URL-decoded) -> :class:`Decoded`; CmcdError if CMCD refuses it."""
    members = [(r.key, r.name, r.value, r.kind, r.text)
               for r in parse_members(text)]
    data, errors, warnings = _check_members(members, config)
    return _finish(data, errors, warnings, config)


def query_value(url: str) -> str:
    """The URL-decoded ``CMCD=`` argument of a request URL (or a bare query);
    CmcdError for a query without one, with two, or badly encoded."""
    query = url.split('?', 1)[1] if '?' in url else url
    query = query.split('#', 1)[0].lstrip('?')
    if _PERCENT_BAD.search(query):
        raise CmcdError('query-malformed', None,
                        'a % not followed by two hex digits')
    params = query.split('&')
    found = [p for p in params if p.startswith('CMCD=') or p == 'CMCD']
    if not found:
        if 'CMCD=' in query:
            raise CmcdError('no-ampersand-between-requests:', None,
                            'CMCD= must follow & in the query')
        raise CmcdError('no-CMCD-request', None, 'no CMCD= query argument')
    if len(found) > 1:
        raise CmcdError('incorrect-format', None, 'more than one CMCD=')
    raw = found[0][5:]
    if _QUERY_UNSAFE.search(raw):
        raise CmcdError('parameter-encoding', None,
                        'the CMCD value must be URL-encoded')
    return urllib.parse.unquote(raw)


def decode_query(url: str, config: Config = Config()) -> Decoded:
    return decode_dictionary(query_value(url), config)


def decode_headers(headers, config: Config = Config()) -> Decoded:
    """HTTP request headers (text ``Name: value`` lines, or (name, value)
    pairs) -> :class:`Decoded` from the four CMCD headers."""
    if isinstance(headers, str):
        pairs = []
        for line in headers.splitlines():
            name, sep, value = line.partition(':')
            if sep:
                pairs.append((name.strip(), value.strip()))
    else:
        pairs = [(n, v.strip()) for n, v in headers]
    members, seen, errors = [], set(), []
    by_header = []
    for name, value in pairs:
        canonical = next((h for h in HEADERS if h.lower() == name.lower()),
                         None)
        if canonical is None:
            continue
        if canonical in seen:
            errors.append(CmcdError('duplicated-header', canonical,
                                    f'This header {canonical} is repeated.'))
            continue
        seen.add(canonical)
        if not value:
            errors.append(CmcdError('empty-header', canonical,
                                    f'Empty header detected! Header: '
                                    f'{canonical}'))
            continue
        by_header.append((canonical, parse_members(value)))
    if not seen:
        raise CmcdError('no-CMCD-request', None, 'no CMCD headers')
    data, warnings = {}, []
    for canonical, raws in by_header:
        members.extend(raws)
        d, e, w = _check_members([(r.key, r.name, r.value, r.kind, r.text)
                                  for r in raws], config, header=canonical)
        for key, value in d.items():
            if key in data:
                e.append(CmcdError('duplicate-key', key, 'sent twice'))
            else:
                data[key] = value
        errors.extend(e)
        for item in w:
            if item not in warnings:
                warnings.append(item)
    return _finish(data, errors, warnings, config)


def _pairs_no_duplicates(pairs):
    seen = {}
    duplicates = []
    for key, value in pairs:
        if key in seen:
            duplicates.append(key)
        seen[key] = value
    if duplicates:
        seen['\0duplicates'] = duplicates
    return seen


def decode_json(text, config: Config = Config()) -> Decoded:
    """CMCD's JSON form: one object of key -> value."""
    obj = text
    if isinstance(text, (str, bytes)):
        try:
            obj = json.loads(text, object_pairs_hook=_pairs_no_duplicates)
        except (ValueError, RecursionError) as e:
            raise CmcdError('invalid-json', None,
                            str(e).split('\n', 1)[0]) from None
    if not isinstance(obj, dict):
        raise CmcdError('invalid-json', None, 'not a JSON object')
    return decode_json_object(obj, config)


def decode_json_object(obj: dict, config: Config = Config(),
                       keys_in_order=None) -> Decoded:
    duplicates = obj.pop('\0duplicates', [])
    members = []
    for key, value in obj.items():
        kind = 'json'
        if isinstance(value, dict):
            kind = 'broken'
        members.append((key, key, value, kind, value))
    specific = set(config.specific) if config.specific else None
    data, errors, warnings = _check_members(members, config, json_form=True)
    for key in duplicates:
        if specific is None or key in specific:
            errors.append(CmcdError('duplicate-key', key, 'sent twice'))
    return _finish(data, errors, warnings, config)


# ------------------------------------------------------------------ helpers

def video_value(value):
    """The video member of an ``ilist`` value: the item marked ``v``, else a
    plain integer (v1), else a lone unmarked item; None otherwise."""
    if value is None:
        return None
    if not isinstance(value, list):
        return value
    for item in value:
        if isinstance(item, SfItem) and 'v' in item.params:
            return item.value
    if len(value) == 1 and not isinstance(value[0], SfItem):
        return value[0]
    return None


def total_value(value):
    """An ``ilist`` value as one number: the integer, or the sum of the
    members (e.g. ``bsd=(720;v)`` -> 720); None if absent."""
    if value is None:
        return None
    if not isinstance(value, list):
        return value
    return sum(i.value if isinstance(i, SfItem) else i for i in value)
