"""Deterministic synthetic event streams, one module per domain.

A domain module defines ``PARAMS`` (name -> (type, default, help)) and
``generate(params) -> SyntheticStream``.  The same seed always gives the same
stream: the same payloads, in the same arrival order, with the same watermark.
"""
import datetime
import typing


class SyntheticStream(typing.NamedTuple):
    """A stream as it would arrive: ticks of processing time.

    Each tick is ``(records, watermark)``: the records that arrive during the
    tick as ``(event_time_seconds, payload_bytes)`` pairs, in arrival order, and
    the watermark (event time, seconds) the source can promise after it: every
    record with an earlier event time that arrives later is late data.
    """
    ticks: list
    tick_seconds: float

    def records(self):
        """``(event_time_seconds, payload)`` pairs in arrival order."""
        for records, _ in self.ticks:
            yield from records

    def payloads(self):
        for _, payload in self.records():
            yield payload

    def __len__(self):
        return sum(len(records) for records, _ in self.ticks)


def arrival_ticks(records, tick_seconds, disorder, start):
    """Group (event_time, arrival_time, payload) into ticks of arrival time.

    The watermark after a tick is its end minus the disorder bound, so that
    records delayed by at most ``disorder`` are never late.
    """
    records = sorted(records, key=lambda r: (r[1], r[0]))
    ticks = []
    i = 0
    tick = 0
    while i < len(records):
        end = start + (tick + 1) * tick_seconds
        batch = []
        while i < len(records) and records[i][1] < end:
            batch.append((records[i][0], records[i][2]))
            i += 1
        ticks.append((batch, end - disorder))
        tick += 1
    return ticks


def parse_start(text: str) -> float:
    """RFC 3339 text with a zone -> epoch seconds; ValueError otherwise."""
    try:
        dt = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
    except ValueError:
        raise ValueError(f'start={text!r} is not an RFC 3339 time') from None
    if dt.tzinfo is None:
        raise ValueError(f'start={text!r} has no time zone')
    if dt.timestamp() < 0:
        raise ValueError(f'start={text!r} is before 1970')
    return dt.timestamp()
