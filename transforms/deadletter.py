"""The dead-letter record and the tagged-output pattern.

Every decoder and validator has two outputs: ``ok`` (the typed record) and
``dead`` (a :class:`DeadLetter`).  A dead letter keeps the raw payload exactly as
it was read, the stage that refused it, a one-line reason and the processing
time, so that it can be inspected and replayed.  Nothing is ever dropped
silently.
"""
import time
import typing

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

OK = 'ok'
DEAD = 'dead'

# A reason is one line; long exception texts are cut so that a hostile record
# cannot blow up the dead-letter table.
MAX_REASON_CHARS = 500


class DeadLetter(typing.NamedTuple):
    """A record that could not be processed, kept with why and where."""
    raw: bytes              # the payload exactly as read
    stage: str              # e.g. 'decode.json', 'validate'
    reason: str             # one line, human readable
    error_time: Timestamp   # processing time at which it was refused
    source: str             # URI of the source the record came from ('' if unknown)


beam.coders.registry.register_coder(DeadLetter, beam.coders.RowCoder)


def to_bytes(raw) -> bytes:
    """The raw payload as bytes, whatever the source gave us."""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode('utf-8', errors='surrogateescape')
    return repr(raw).encode('utf-8')


def one_line(reason: str) -> str:
    reason = ' '.join(str(reason).split())
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS - 3] + '...'
    return reason


def dead_letter(raw, stage: str, reason: str, source: str = '') -> DeadLetter:
    return DeadLetter(
        raw=to_bytes(raw),
        stage=stage,
        reason=one_line(reason),
        error_time=Timestamp.of(time.time()),
        source=source)
