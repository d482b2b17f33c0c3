"""Deterministic synthetic event streams, one module per domain.

A domain module defines ``PARAMS`` (name -> (type, default, help)) and
``generate(params) -> SyntheticStream``.  The same seed always gives the same
stream: the same payloads, in the same arrival order, with the same watermark.

A stream is generated lazily, tick by tick, each time it is iterated: a
generator yields its records in (about) event-time order with a lower bound on
the arrival time of every record still to come, and :func:`stream_ticks`
holds only the records that have not arrived yet (those within the largest
delay, a few minutes of event time), whatever the number of events.
"""
import datetime
import heapq
import itertools
import math
import typing

import numpy as np


class SyntheticStream(typing.NamedTuple):
    """A stream as it would arrive: ticks of processing time.

    Each tick is ``(records, watermark)``: the records that arrive during the
    tick as ``(event_time_seconds, payload_bytes)`` pairs, in arrival order, and
    the watermark (event time, seconds) the source can promise after it: every
    record with an earlier event time that arrives later is late data.
    """
    ticks: typing.Iterable    # of (records, watermark); see Ticks
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


class Ticks:
    """The ticks of a stream, made anew (lazily) on each iteration by
    ``make()``; equal to another Ticks (or a list) with the same ticks.
    No ``len``: ``list(ticks)`` would walk the stream twice to size itself."""
    __slots__ = ('_make',)

    def __init__(self, make):
        self._make = make

    def __iter__(self):
        return iter(self._make())

    def __eq__(self, other):
        if not isinstance(other, (Ticks, list, tuple)):
            return NotImplemented
        sentinel = object()
        for a, b in zip(itertools.chain(self, [sentinel]),
                        itertools.chain(other, [sentinel])):
            if a is sentinel or b is sentinel:
                return a is b
            if a != b:
                return False
        return True

    __hash__ = None


def stream_ticks(records, tick_seconds, disorder, start):
    """Ticks of arrival time from ``(event_time, arrival_time, payload,
    later)`` tuples, lazily: ``later`` is a lower bound of the arrival time of
    every record yielded after this one.  A tick is complete once the bound
    passes its end; only records not yet arrived are held.  The same ticks as
    :func:`arrival_ticks` on the same records (ties in arrival time by event
    time, then by generation order)."""
    source = iter(records)
    heap = []
    state = {'seq': 0, 'later': -math.inf, 'done': False}

    def pull():
        try:
            event, arrival, payload, later = next(source)
        except StopIteration:
            state['done'] = True
            return
        # A copy of its own size: orjson's bytes keep their 4 KiB buffer,
        # which a consumer holding many payloads would hold too.
        heapq.heappush(heap, (arrival, event, state['seq'],
                              bytes(memoryview(payload))))
        state['seq'] += 1
        state['later'] = later

    tick = 0
    while True:
        if not heap and not state['done']:
            pull()
        if not heap:
            return
        end = start + (tick + 1) * tick_seconds
        while not state['done'] and state['later'] < end:
            pull()
        batch = []
        while heap and heap[0][0] < end:
            arrival, event, _, payload = heapq.heappop(heap)
            batch.append((event, payload))
        yield batch, end - disorder
        tick += 1


class ColumnTicks(Ticks):
    """:class:`Ticks` made from ticks of columns, ``(event times, payloads,
    watermark)``: the event times a numpy array, the payloads a list, in
    arrival order.  Iterating gives the ``(records, watermark)`` pairs, as
    every stream does; :meth:`columns` the columns themselves (no tuple per
    record: what a source that plays a tick as one block needs)."""
    __slots__ = ('_columns',)

    def __init__(self, make_columns):
        super().__init__(lambda: tick_pairs(make_columns()))
        self._columns = make_columns

    def columns(self):
        return iter(self._columns())


def tick_pairs(column_ticks):
    """Ticks of columns -> ticks of ``(event time, payload)`` pairs."""
    for times, payloads, watermark in column_ticks:
        yield list(zip(times.tolist(), payloads)), watermark


def chunk_ticks(chunks, tick_seconds, disorder, start):
    """:func:`stream_ticks` for records that come in chunks of arrays:
    ``(event_times, arrival_times, payloads, later)`` with ``later`` a lower
    bound of the arrival time of every record of the chunks after it.  The
    same ticks as :func:`stream_ticks` on the same records, one record at a
    time (ties in arrival time by event time, then by generation order),
    selected and ordered with numpy a tick at a time instead of a heap
    operation per record."""
    return tick_pairs(chunk_tick_columns(chunks, tick_seconds, disorder,
                                         start))


def chunk_tick_columns(chunks, tick_seconds, disorder, start):
    """:func:`chunk_ticks` as ticks of columns: ``(event times (numpy),
    payloads (list), watermark)``, the records pending held in arrays (no
    Python object per record but its payload)."""
    source = iter(chunks)
    arrival = np.zeros(0)
    event = np.zeros(0)
    seq = np.zeros(0, np.int64)
    held = np.zeros(0, object)          # the payloads, aligned with seq
    state = {'later': -math.inf, 'done': False, 'next': 0}

    def pull():
        nonlocal arrival, event, seq, held
        try:
            events, arrivals, payloads, later = next(source)
        except StopIteration:
            state['done'] = True
            return
        first = state['next']
        numbers = np.arange(first, first + len(payloads), dtype=np.int64)
        state['next'] = first + len(payloads)
        arrival = np.concatenate((arrival, arrivals))
        event = np.concatenate((event, events))
        seq = np.concatenate((seq, numbers))
        # (Payloads made by orjson must be copied to their size first:
        # orjson's bytes keep their 4 KiB buffer.)
        fresh = np.empty(len(payloads), object)
        fresh[:] = payloads
        held = np.concatenate((held, fresh))
        state['later'] = later

    tick = 0
    while True:
        if not len(seq) and not state['done']:
            pull()
        if not len(seq):
            return
        end = start + (tick + 1) * tick_seconds
        while not state['done'] and state['later'] < end:
            pull()
        due = arrival < end
        times, payloads = np.zeros(0), []
        if due.any():
            index = np.flatnonzero(due)
            order = index[np.lexsort((seq[index], event[index],
                                      arrival[index]))]
            times, payloads = event[order], held[order].tolist()
            keep = ~due
            arrival, event, seq, held = (arrival[keep], event[keep],
                                         seq[keep], held[keep])
        yield times, payloads, end - disorder
        tick += 1


def arrival_ticks(records, tick_seconds, disorder, start):
    """Group (event_time, arrival_time, payload) into ticks of arrival time
    (all at once: the reference :func:`stream_ticks` is checked against).

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
