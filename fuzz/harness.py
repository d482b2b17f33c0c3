"""Checks one decoder on generated lines; counts what became of them.

For each line, the decoder (through :func:`transforms.decode.decode_payload`,
the one definition of what decoding accepts) gives a record, a dead letter or
a named filter.  A finding is raised for:

* an exception other than the decoder's refusal (``DecodeError``) escaping
  the decoder (``decode_payload`` would dead-letter it as "unexpected", which
  hides a bug);
* a record that is not of the record type, or that the Parquet sink could
  not write (its fields do not fit the schema), or outside the event-time
  range;
* a dead letter that does not keep the raw payload or has no one-line
  reason;
* a columnar reader that, fed the lines as one block, reads any line
  differently from the reference, accepts a line it refuses, or refuses one
  it accepts.
"""
import collections
import math

import numpy as np
import pyarrow as pa

from transforms import deadletter, schemas
from transforms.decode import (MAX_EVENT_TIME, MIN_EVENT_TIME, DecodeError,
                               Filtered, decode_payload)

# Small, so that oversized lines are cheap to make.
MAX_BYTES = 4096
# Bytes after which a line is cut to make its truncated variants.
CUT_AFTER = frozenset(b' ,:;"{}[]=<>')
MAX_VARIANTS = 24


class Finding(AssertionError):
    """A decoder broke a rule on a generated input."""


class _Escaped(BaseException):
    """Carries an unexpected exception past decode_payload's safety net."""


def _strict(decoder):
    def decode(text):
        try:
            return decoder(text)
        except DecodeError:
            raise
        except Exception as e:  # pylint: disable=broad-except
            raise _Escaped(e) from e
    return decode


class Counts(collections.Counter):
    """drawn (by hypothesis), inputs (drawn and their variants), records,
    dead_letters, filtered, blocks, columnar_rows."""


def check_line(target, raw: bytes, counts: Counts):
    try:
        result = decode_payload(raw, _strict(target.decoder), target.stage,
                                max_bytes=MAX_BYTES)
    except _Escaped as e:
        cause = e.args[0]
        raise Finding(f'{target.name}: {type(cause).__name__}: {cause} '
                      f'escaped the decoder on {raw!r}') from cause
    counts['inputs'] += 1
    if isinstance(result, Filtered):
        counts['filtered'] += 1
    elif isinstance(result, deadletter.DeadLetter):
        if result.raw != raw or not result.reason or \
                '\n' in result.reason or result.stage != target.stage:
            raise Finding(f'{target.name}: malformed dead letter {result!r}')
        counts['dead_letters'] += 1
    else:
        if not isinstance(result, target.record_type):
            raise Finding(f'{target.name}: {type(result).__name__} is not a '
                          f'{target.record_type.__name__} for {raw!r}')
        if not MIN_EVENT_TIME <= result.event_time <= MAX_EVENT_TIME:
            raise Finding(f'{target.name}: event time out of range {result!r}')
        try:
            schemas.to_arrow([result], target.record_type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
            raise Finding(f'{target.name}: the record of {raw!r} cannot be '
                          f'written: {type(e).__name__}: {e}') from e
        counts['records'] += 1
    return result


def _cell(value):
    if isinstance(value, float) and math.isnan(value):
        return 'NaN'
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def column_rows(columns) -> list:
    """A columnar decoder's Columns as sorted row tuples (NaN comparable)."""
    lists = []
    for name in columns.__slots__:
        value = getattr(columns, name)
        lists.append(value.to_pylist() if hasattr(value, 'to_pylist')
                     else np.asarray(value).tolist())
    return sorted((tuple(_cell(v) for v in row) for row in zip(*lists)),
                  key=repr)


def _refusals(refused) -> list:
    return sorted(((r.raw, r.reason) if isinstance(r, deadletter.DeadLetter)
                   else (b'', f'filtered.{r.name}')) for r in refused)


def check_block(target, lines, counts: Counts):
    """The columnar reader on the lines as one block == the reference."""
    block = target.columnar(target.decoder)
    block.max_bytes = MAX_BYTES
    data = b'\n'.join(lines)
    fast, fast_refused, fast_count = block.decode(data)
    ref, ref_refused, ref_count = block.decode_each(list(lines))
    if fast_count != ref_count or column_rows(fast) != column_rows(ref):
        a, b = column_rows(fast), column_rows(ref)
        extra = [r for r in a if r not in b][:3]
        missing = [r for r in b if r not in a][:3]
        raise Finding(f'{target.name}: the columnar reader reads the block '
                      f'differently: it has {extra}, the reference has '
                      f'{missing}; lines {lines!r}')
    if _refusals(fast_refused) != _refusals(ref_refused):
        raise Finding(f'{target.name}: the columnar reader refuses '
                      f'{_refusals(fast_refused)}, the reference '
                      f'{_refusals(ref_refused)}')
    counts['blocks'] += 1
    counts['columnar_rows'] += fast_count


def variants(raw: bytes) -> list:
    """The line cut after each structural byte (space, comma, colon, quote,
    bracket ...): where parsers meet a record that ends too soon.  At most
    MAX_VARIANTS, spread over the line."""
    cuts = [i + 1 for i, byte in enumerate(raw[:MAX_BYTES])
            if byte in CUT_AFTER and i + 1 < len(raw)]
    if len(cuts) > MAX_VARIANTS:
        step = len(cuts) / MAX_VARIANTS
        cuts = [cuts[int(k * step)] for k in range(MAX_VARIANTS)]
    return [raw[:cut] for cut in cuts]


def check_lines(target, drawn, counts: Counts):
    """Every drawn line and its truncated variants alone, then (where the
    target has a columnar reader) all of them as one block."""
    counts['drawn'] += len(drawn)
    lines = [variant for raw in drawn for variant in [raw] + variants(raw)]
    for raw in lines:
        check_line(target, raw, counts)
    if target.columnar is not None:
        check_block(target, lines, counts)
    if counts['inputs'] != counts['records'] + counts['dead_letters'] + \
            counts['filtered']:
        raise Finding(f'{target.name}: inputs do not add up: {counts}')
