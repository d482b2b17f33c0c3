"""Masking of personal data in free text, applied before anything is written.

:class:`Masker` finds

* bearer tokens (``Bearer <token>``, any case, alone or in an ``Authorization:``
  header), HTTP Basic credentials in an ``Authorization:`` header, and
  JWT-looking tokens (``eyJ...``.``eyJ...``.signature);
* e-mail addresses;
* IPv6 addresses (full, compressed with ``::``, with an embedded IPv4 part or a
  zone); candidates found by a loose pattern are kept only if :mod:`ipaddress`
  accepts them, so clock times (``10:00:00``) and MAC addresses stay as they are;
* IPv4 addresses with valid octets (not ``999.1.1.1``, not inside ``1.2.3.4.5``,
  but also where a reverse-DNS name embeds one: ``1.2.3.4.example.net``);

and replaces them, in that order, either with fixed placeholders (``mode='mask'``:
``<ip>``, ``<email>``, ``<token>``) or with keyed pseudonyms (``mode='hash'``:
``<ip:0123456789ab>``, the first 12 hex digits of HMAC-SHA256(key, value)), so
that distinct clients can still be counted without being named.  Tokens are
credentials and are always replaced by ``<token>``, never hashed.

:class:`MaskFields` applies a masker to named fields of every record (text or
bytes) in a pipeline.

Before hashing, an IP address is written in its canonical form (IPv4-mapped IPv6
as plain IPv4, IPv6 compressed and lower case) and an e-mail address in lower
case, so one client gets one pseudonym however it was spelled.
"""
import hashlib
import hmac
import ipaddress
import re
import typing

import apache_beam as beam

MODES = ('mask', 'hash')
HASH_HEX_CHARS = 12

TOKEN = '<token>'

# "Bearer <token>", case-insensitive; the word is kept, the token replaced.
_BEARER_RE = re.compile(r'\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*', re.IGNORECASE)
# "Authorization: Basic base64(user:password)".
_BASIC_RE = re.compile(
    r'\b(authorization\s*[:=]\s*basic\s+)[A-Za-z0-9+/]+=*', re.IGNORECASE)
# header.payload.signature, both JSON parts starting '{"' -> 'eyJ' in base64url.
_JWT_RE = re.compile(r'(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*'
                     r'(?:\.[A-Za-z0-9_-]*)?')
# Bounded local part (at most 64 characters, as in RFC 5321) keeps this linear.
_EMAIL_RE = re.compile(
    r'[A-Za-z0-9._%+-]{1,64}@'
    r'(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}')
# A maximal run of hex digits, colons and dots holding a colon, optionally with a
# zone ("%eth0"); ipaddress decides whether it is an address.
_IPV6_CANDIDATE_RE = re.compile(
    r'(?<![\w:.])[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(?:%[0-9A-Za-z_.\-]+)?')
_IPV6_MAX_CHARS = 64
_OCTET = r'(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)'
# Not inside a longer dotted number ("1.2.3.4.5"), but inside a reverse-DNS
# name ("62.99.164.82.example.net") the address is masked too.
_IPV4_RE = re.compile(
    r'(?<!\w)(?<!\d\.)' + _OCTET + r'(?:\.' + _OCTET + r'){3}(?!\w|\.\d)')


def _canonical_ip(address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _ipv6_address(candidate: str):
    """The IPv6 address a candidate spells, trying it without trailing
    punctuation ("2001:db8::1." or "2001:db8::1:" ending a sentence); or None."""
    if len(candidate) > _IPV6_MAX_CHARS or candidate.count(':') < 2:
        return None
    tries = [candidate]
    trimmed = candidate.rstrip('.')
    if trimmed != candidate:
        tries.append(trimmed)
    if trimmed.endswith(':') and not trimmed.endswith('::'):
        tries.append(trimmed[:-1])
    for text in tries:
        try:
            address = ipaddress.IPv6Address(text)
        except ValueError:
            continue
        if address.is_unspecified and text == '::':
            return None     # a bare "::" is punctuation far more often than an address
        return address, text
    return None


class Masker:
    """Replaces IP addresses, e-mail addresses and tokens in text.

    ``Masker(mode='hash', key=b'secret')`` gives keyed pseudonyms such as
    ``<ip:0123456789ab>`` (the same value and key always give the same one);
    ``Masker(mode='mask')`` gives fixed placeholders ``<ip>``, ``<email>``.
    Tokens always become ``<token>``.  Instances are picklable.
    """

    def __init__(self, mode: str = 'hash', key=None):
        if mode not in MODES:
            raise ValueError(f'unknown masking mode {mode!r}; accepted: '
                             f'{", ".join(MODES)}')
        if isinstance(key, str):
            key = key.encode('utf-8')
        if key is not None and not isinstance(key, (bytes, bytearray)):
            raise ValueError('key must be bytes or str')
        if mode == 'hash' and not key:
            raise ValueError("mode 'hash' needs a non-empty key")
        self.mode = mode
        self._key = bytes(key) if key else b''

    def __repr__(self):
        return f'Masker(mode={self.mode!r})'     # never shows the key

    def pseudonym(self, kind: str, value: str) -> str:
        """The replacement for one value of a kind ('ip', 'email')."""
        if self.mode == 'mask':
            return f'<{kind}>'
        digest = hmac.new(self._key, value.encode('utf-8', 'surrogatepass'),
                          hashlib.sha256).hexdigest()
        return f'<{kind}:{digest[:HASH_HEX_CHARS]}>'

    def _email(self, m) -> str:
        return self.pseudonym('email', m.group(0).lower())

    def _ipv6(self, m) -> str:
        found = _ipv6_address(m.group(0))
        if found is None:
            return m.group(0)
        address, text = found
        return self.pseudonym('ip', _canonical_ip(address)) + m.group(0)[len(text):]

    def _ipv4(self, m) -> str:
        return self.pseudonym('ip', str(ipaddress.IPv4Address(m.group(0))))

    def mask(self, text: str) -> str:
        """``text`` with tokens, e-mail addresses and IP addresses replaced."""
        if not text or not isinstance(text, str):
            return text
        lowered = text.lower()
        if 'bearer' in lowered:
            text = _BEARER_RE.sub(r'\1' + TOKEN, text)
        if 'basic' in lowered:
            text = _BASIC_RE.sub(r'\1' + TOKEN, text)
        if 'eyJ' in text:
            text = _JWT_RE.sub(TOKEN, text)
        if '@' in text:
            text = _EMAIL_RE.sub(self._email, text)
        if ':' in text:
            text = _IPV6_CANDIDATE_RE.sub(self._ipv6, text)
        if '.' in text:
            text = _IPV4_RE.sub(self._ipv4, text)
        return text


class _MaskFirst:
    """Picklable ``(record, x) -> (masked record, x)``."""

    def __init__(self, mask):
        self._mask = mask

    def __call__(self, pair):
        return self._mask(pair[0]), pair[1]


class _MaskRecordFields:
    """Picklable ``record -> record`` with the named fields masked."""

    def __init__(self, masker: Masker, fields: typing.Sequence[str]):
        self._masker = masker
        self._fields = tuple(fields)

    def _mask_value(self, value):
        if isinstance(value, str):
            return self._masker.mask(value)
        if isinstance(value, (bytes, bytearray)):
            # Undecodable bytes survive the round trip unchanged.
            text = bytes(value).decode('utf-8', 'surrogateescape')
            return self._masker.mask(text).encode('utf-8', 'surrogateescape')
        return value

    def __call__(self, record):
        changes = {}
        for name in self._fields:
            value = getattr(record, name)
            masked = self._mask_value(value)
            if masked is not value and masked != value:
                changes[name] = masked
        return record._replace(**changes) if changes else record


class MaskFields(beam.PTransform):
    """``PCollection[NamedTuple]`` -> the same records with the named ``str`` or
    ``bytes`` fields masked by ``masker`` (None and other types pass unchanged).

    Element-wise: timestamps, windows and the element type are kept.  Use as::

        records | MaskFields(masker, ('message',))
    """

    def __init__(self, masker: Masker, fields: typing.Sequence[str],
                 paired: bool = False, label=None):
        super().__init__(label)
        if isinstance(fields, str):
            fields = (fields,)
        if not fields:
            raise ValueError('MaskFields needs at least one field name')
        self._fn = _MaskRecordFields(masker, fields)
        # paired: the elements are (record, payload) pairs (Decode
        # with_raw); the record is masked, the payload passes unchanged
        # (it is masked where it becomes a dead letter).
        self._paired = paired

    def expand(self, records):
        if self._paired:
            return records | 'Mask' >> beam.Map(_MaskFirst(self._fn))
        mask = beam.Map(self._fn)
        if records.element_type is not None:
            # The same type out as in, so a schema coder (RowCoder) is kept.
            mask = mask.with_output_types(records.element_type)
        return records | 'Mask' >> mask
