"""The dead-letter record and the tagged-output pattern.

Every decoder and validator has two outputs: ``ok`` (the typed record) and
``dead`` (a :class:`DeadLetter`).  A dead letter keeps the raw payload exactly as
it was read, the stage that refused it, a one-line reason and the processing
time, so that it can be inspected and replayed.  Nothing is ever dropped
silently.
"""
import collections
import threading
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


def dead_letter(raw, stage: str, reason: str, source: str = '',
                claim: bool = True) -> DeadLetter:
    """``claim``: a payload a local read registered names its message or
    record after ``source`` (False where the caller names it: ``source``
    then has its fragment already, see :func:`output_source`)."""
    raw = to_bytes(raw)
    if _ORIGINS and source and claim:
        origin = _claim_origin(raw)
        if origin is not None:
            source = f'{source}#{origin.tag}'
    return DeadLetter(
        raw=raw,
        stage=stage,
        reason=one_line(reason),
        error_time=Timestamp.of(time.time()),
        source=source)


# Where a dead letter came from, for a local read that resumes after a kill
# (transforms/io/_pubsub_acks.py, _kafka_commits.py): a read registers the
# payloads it hands on that the job cannot date (each one a decode dead
# letter once decoded) with a tag naming the message or record
# ('message=ID', 'partition=P&offset=O'); the dead letter made of that
# payload carries the tag after the source URI ('URI#message=ID'), so that
# a restart finds in the dead-letter files which of the messages delivered
# again were dead-lettered already.  Equal payloads take their tags in the
# order they were registered.  Empty unless a local read registers some.
#
# A record with several windowed outputs (video_qoe: a report's session and
# its rollups) may be late for each, and each late dead letter is written
# on its own, so a kill may leave some of them in the sink and not the
# others.  Such a job binds the origin to the decoded record
# (:class:`BindOrigins`), and each late dead letter names the output it
# stands for after it ('message=ID&window=session&key=K', see
# :func:`output_source`).  A restart registers a message delivered again
# with the outputs whose late dead letters the sink still holds
# (``written``); the record is then kept out of those outputs' groupings
# alone (``transforms.aggregate``) and goes through the others again.
_ORIGINS = {}                   # raw payload -> deque of Origin
_ORIGINS_LOCK = threading.Lock()


class Origin(typing.NamedTuple):
    """Where a record came from (``tag``: 'message=ID'), and the outputs
    whose late dead letters a killed run wrote ('window=NAME&key=K').
    ``final_by``: a record a restart reads again that the killed run had
    handed on before the horizon it resumes was taken (event time,
    seconds): each of its windows closing by then (end plus the allowed
    lateness) is final and written, the record in that final pane or its
    late dead letter written, so the grouping keeps it out of those
    windows (``transforms.aggregate``; None: none)."""
    tag: str
    written: frozenset = frozenset()
    final_by: typing.Optional[float] = None


def register_origin(raw: bytes, tag: str, written=(),
                    final_by=None) -> None:
    with _ORIGINS_LOCK:
        _ORIGINS.setdefault(raw, collections.deque()).append(
            Origin(tag, frozenset(written), final_by))


def output_tag(output: str, key) -> str:
    """The part of a late dead letter's tag naming its output: the grouping
    (``output``) and the key it was late for."""
    from urllib.parse import quote  # pylint: disable=import-outside-toplevel
    return f'window={output}&key={quote(str(key), safe="")}'


def output_source(source: str, origin, output: str, key) -> str:
    """The ``source`` of a late dead letter of ``output`` (a grouping) for
    ``key``: ``URI#message=ID&window=OUTPUT&key=K`` where the record's
    ``origin`` is known, else the URI."""
    if origin is None or not source:
        return source
    return f'{source}#{origin.tag}&{output_tag(output, key)}'


def split_tag(tag: str):
    """A dead letter's tag -> ``(origin tag, output tag or '')``:
    'message=1&window=session&key=s' -> ('message=1', 'window=session&key=s')."""
    head, sep, rest = tag.partition('&window=')
    return head, f'window={rest}' if sep else ''


def forget_origins(pairs=None) -> None:
    """Drops the tags of ``(raw, tag)`` pairs (their messages were
    acknowledged), or all of them (None: a new run)."""
    with _ORIGINS_LOCK:
        if pairs is None:
            _ORIGINS.clear()
            return
        for raw, tag in pairs:
            tags = _ORIGINS.get(raw)
            if tags is None:
                continue
            found = next((o for o in tags if o.tag == tag), None)
            if found is None:
                continue
            tags.remove(found)
            if not tags:
                del _ORIGINS[raw]


def _claim_origin(raw: bytes):
    """The Origin registered first for ``raw`` (taken), or None."""
    with _ORIGINS_LOCK:
        tags = _ORIGINS.get(raw)
        if not tags:
            return None
        tag = tags.popleft()
        if not tags:
            del _ORIGINS[raw]
        return tag


def claim_origin(raw):
    """The Origin a local read registered for the payload ``raw``, taken
    (each registration names one record), or None."""
    if not _ORIGINS:
        return None
    return _claim_origin(to_bytes(raw))


def claim_origins(payloads):
    """:func:`claim_origin` of each of ``payloads`` (an Arrow binary
    array) in turn: ``(rows, origins)``, the indices of the payloads a
    read registered (numpy, in order) and the Origin taken for each; None
    where it registered none of them.  The payloads are matched against
    the registry in one vectorised pass (``pyarrow.compute.is_in``), so a
    block of which a few lines were registered costs little more than
    none."""
    if not _ORIGINS or not len(payloads):
        return None
    import numpy as np  # pylint: disable=import-outside-toplevel
    import pyarrow as pa  # pylint: disable=import-outside-toplevel
    import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
    with _ORIGINS_LOCK:
        registered = list(_ORIGINS)
    if not registered:
        return None
    rows = np.flatnonzero(pc.is_in(payloads, value_set=pa.array(
        registered, payloads.type)).to_numpy(zero_copy_only=False))
    if not rows.size:
        return None
    found = []
    with _ORIGINS_LOCK:
        for raw in payloads.take(pa.array(rows)).to_pylist():
            tags = _ORIGINS.get(raw)
            if not tags:
                found.append(None)
                continue
            found.append(tags.popleft())
            if not tags:
                del _ORIGINS[raw]
    return rows, found


class Sourced(typing.NamedTuple):
    """What a value on its way to a grouping carries (``windows.WithRaw``'s
    ``raw``) where its record's origin is known: the payload its late dead
    letter holds (None: the value, as JSON) and the record's Origin."""
    raw: typing.Any
    origin: Origin


def origin_of(raw):
    """The Origin a carried ``raw`` names, or None."""
    return raw.origin if isinstance(raw, Sourced) else None


class BindOrigins(beam.DoFn):
    """``(record, payload)`` -> ``(record, payload)`` or, where a local read
    registered the payload (a record that may be late), ``(record,
    Sourced(payload, origin))``: the message or record it was read from,
    bound to the decoded record so that every late dead letter it makes
    names it."""

    def process(self, pair):
        origin = claim_origin(pair[1]) if _ORIGINS else None
        if origin is None:
            yield pair
        else:
            yield pair[0], Sourced(pair[1], origin)


def origins_written(directory: str, source: str,
                    table: str = 'dead_letter') -> set:
    """The tags of the dead letters from ``source`` (its URI text) written
    under ``directory``'s ``table`` (Parquet or JSON-lines files)."""
    import json  # pylint: disable=import-outside-toplevel
    import pathlib  # pylint: disable=import-outside-toplevel
    prefix = f'{source}#'
    found = set()
    root = pathlib.Path(directory) / table
    if not root.is_dir():
        return found
    for path in root.rglob('*'):
        if not path.is_file() or '.tmp-' in path.name:
            continue
        if path.suffix == '.parquet':
            import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
            sources = pq.read_table(path, columns=['source']).column(
                'source').to_pylist()
        elif path.suffix == '.jsonl':
            with open(path, encoding='utf-8') as f:
                sources = [json.loads(line).get('source')
                           for line in f if line.strip()]
        else:
            continue
        found.update(s[len(prefix):] for s in sources
                     if s and s.startswith(prefix))
    return found
