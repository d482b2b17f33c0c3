"""What message sinks (Kafka, Pub/Sub) share: one JSON message per row.

A row becomes a JSON object (times as RFC 3339 UTC, as in ``jsonl://``) with a
key from the first of its record type's ``IDENTITY_FIELDS`` (the service,
symbol ..., so that one entity's messages keep their order in a partition;
no key for rows without identity fields, e.g. dead letters), the table's name and the
row's event time.  A topic name may hold ``{table}``: each output table then
goes to a topic of its own; without it every table goes to the one topic and
the ``table`` header/attribute tells them apart.  A ``run`` header/attribute
names the run that published the message (``io.Context.run_id``): a restart
publishes the windows it replays again, and a consumer keeps, per window, the
panes of the latest run (docs/reliability.md, "Other sinks").
"""
import re
import typing

import orjson
from apache_beam.utils.timestamp import Timestamp

from transforms import schemas
from transforms.io import UriError

TABLE_PLACEHOLDER = '{table}'


class Message(typing.NamedTuple):
    topic: str
    key: typing.Optional[bytes]   # None: spread over partitions
    value: bytes
    table: str
    event_time_ms: typing.Optional[int]


def topic_for(pattern: str, table: str) -> str:
    return pattern.replace(TABLE_PLACEHOLDER, table)


def check_topic_pattern(uri, pattern: str, allowed=r'[A-Za-z0-9._-]+'):
    """Reject a topic name the broker would reject, before anything starts."""
    name = topic_for(pattern, 'table')
    if not name or not re.fullmatch(allowed, name):
        raise UriError(f'{uri.text}: topic {pattern!r} is not a valid name '
                       f'(letters, digits, ".", "_", "-"; "{{table}}" is '
                       f'replaced by the output table)')


def rfc3339(millis: int) -> str:
    return schemas.rfc3339(Timestamp(micros=millis * 1000))


def _event_time_ms(row) -> typing.Optional[int]:
    for name in ('event_time', 'window_end', 'processing_time'):
        value = getattr(row, name, None)
        if isinstance(value, Timestamp):
            return value.micros // 1000
    return None


def attributes(table: str, run_id: str) -> dict:
    """The header/attribute values every message of ``table`` carries."""
    return {'table': table, **({'run': run_id} if run_id else {})}


def to_message(row, topic: str, table: str) -> Message:
    fields = getattr(type(row), 'IDENTITY_FIELDS', None)
    data = schemas.to_json_dict(row)
    key = str(data[fields[0]]).encode() if fields else None
    return Message(topic, key, orjson.dumps(data), table,
                   _event_time_ms(row))
