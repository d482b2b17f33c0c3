"""Which Kafka offsets a local run may commit, and what a restart resumes.

The bundle-based local runner keeps window state in memory: a record whose
window has not emitted its final pane is lost with the process.  So a local
Kafka read commits an offset only once every record before it is *final*:
its windows have all emitted their final panes (event time past the window's
end plus the allowed lateness, ``io.Context.final_at``) and everything they
produced is written, and nothing its read emitted is still pending (a
record the job cannot date is a dead letter once decoded).  The runner
tells when that holds (``release``, called by pipelines/local_runner.py
between bundles): the horizon up to which windows are final, and the
earliest timestamp pending downstream of the reads; a read's checkpoint
counts once the runner has committed the read's output (``read_committed``)
before it looked (``prepare``).  Per partition, in offset order: the
horizon of Pub/Sub's acknowledgements (_pubsub_acks.py).

Each commit carries, per partition, metadata a restart needs::

    {"h": horizon (s), "t": wall-clock time of the commit (s),
     "r": the partition's next offset read by the reads handed over
          before the horizon was taken (a record read but not handed
          over is not in that horizon: if its windows are final there,
          it is late, and its dead letter is written after the look),
     "p": its processed position then (where below "r"): every record
          before it has its output written or in window state}

A restart of the group then (``Resume``)

* starts each partition at its committed offset, its watermark at ``h``;
* skips a record before ``r`` whose windows were all final at ``h``: it
  is already in those final panes; and one before ``p`` that the job
  cannot date: it is in the dead letters (counted
  ``filtered.replayed_final``);
* skips a record whose dead letter the sink holds (written before the
  kill, maybe after the look): one the job cannot date, or one that was
  late (window.late); the dead letter names it
  (``deadletter.register_origin``; counted
  ``filtered.replayed_dead_letter``);
* finds later records of final windows late, as a run that had not stopped
  would have, and keeps them as dead letters;

Late records.  A record's windows may be final under its partition's
watermark when it is read (the grouping that decides lateness is behind
it: a superset of the late records, in an ordered stream only the
disordered ones): the read registers it as its dead letter's origin, and
tells the ledger (``emitted(late=...)``).  Once *settled* (handed over,
nothing pending stamped at or before the later of its value's timestamp
and its windows' close: what it produced is done, it is in its window or
its late dead letter is written) it is forgotten, its registration too
unless a dead letter took it.  One handed over but not settled may be in its window (if that
window's final pane is written, a restart must skip it) or pending before
its decode, late (its dead letter not yet written, a restart must read it
again), which the restart cannot tell apart: so no commit carries a
horizon past its windows.  The horizon committed stops just before them
(the restart rolls those windows back and reads them again, the record
with them), or, where an earlier commit's horizon is already past them
(it is late, its windows final before it came), nothing is committed
until it is settled.  A horizon committed never goes back (the runner's
dips below final windows while a late record is pending, and the windows
final at a commit, or at the commit a restart resumes, were kept by the
roll-back: their records are not read again).

Records a restart reads again.  Where a job's late dead letters name
their output (``io.Context.late_from``), a record's windows close at
different times (logs, trades and sensors with sliding windows,
``aggregate.per_window_late_from``: a record in several windows;
video_qoe: a report in its session, never final before the read ends,
and in rollup windows), and a restart reads it again while its last
window is not final at the horizon committed, though earlier ones may
be: it must stay out of those.

* Where the windows are fixed by the record's own event time
  (``windows.LateFrom.keeps_out``: fixed and sliding), the horizon is the
  runner's, and a restart keeps a record before ``r`` out of those of its
  windows closing by ``h`` (``deadletter.Origin.final_by``, dropped by the
  count step before the grouping, ``transforms.aggregate``, counted
  ``final_replayed``) and reads it into the others.  Exact because such a
  record was handed over before the look that took ``h``: each of its
  windows closing by ``h`` was final and written then, and the record is
  in that final pane, or it was late for it; a late one was registered as
  possibly late (the grouping that decides lateness is behind the
  watermark it was read under), and while it is not settled the horizon
  committed stops just before its first window close (the rule above:
  its entry carries ``late_from``, the first of its windows, so each
  window of it is behind the horizon), so, under ``h``, it was settled
  before the look: its late letter is written (before the commit's time,
  kept by the roll-back) and the restart finds it (``written``).  Either
  way the record is already counted there.  Records at or after ``r``: not
  in ``h``'s panes (late for its windows final there), as before.
* Sessions (video_qoe): the session a record was assigned to is not the
  one it closes in, so the restart cannot keep it out by a window's
  close; the read tells the ledger the first window close of its records
  (``emitted(first=...)``), and no commit carries a horizon at or past the
  first window close of a record handed over before the runner's look
  whose windows are not all final by it; where an earlier commit is past
  it, nothing is committed until the read ends.

(a run that ended commits the horizon ``COMPLETE``: nothing to skip or
roll back, and the next run's watermark starts afresh), and the sinks drop
what the killed run wrote after the commit
(``pipelines.run``: windows not final at ``h``, dead letters written after
``t``), which the restart writes again.  The event time used here is the one
the watermark and the windows use: the payload's where the job gives the
source one (``io.Context.event_time``: a replay published now carries
today's record timestamps), read for every record, else the Kafka record's
timestamp.  A record the job cannot date is a dead letter written as soon
as it is decoded: it holds no window open, only the commit until its dead
letter is written.  A poll's records may travel as one block; a
checkpoint, and so a commit, covers whole blocks, committed only once all
their records are final, and a restart reads a poll reaching back before
``r`` record by record.
"""
import json
import threading
import time
import typing

_LOCK = threading.Lock()
_LEDGERS = {}               # (brokers, topic, group, config) -> _Ledger
_LISTENERS = []             # [(release, forget)] of other sources' ledgers
# Commit at most this often while a stream runs (a commit is a round trip).
MIN_INTERVAL = 0.5
# The horizon a run that ended commits (every window it read is final).
COMPLETE = 1e15


class Resume(typing.NamedTuple):
    """What the last commit of a group says about one partition."""
    offset: int               # committed: the next record to read
    horizon: float            # windows closing by then were final
    committed_at: float       # wall-clock time of that commit
    read: int                 # the next offset read when it was taken
    # before it, every record's output is written or in window state
    processed: int = None

    @property
    def complete(self) -> bool:
        """The run that committed ended: everything it read is final."""
        return self.horizon >= COMPLETE

    def already_counted(self, offset, event_time, final_at) -> bool:
        """Whether a record read again after the restart is already
        counted: read before the commit's look into windows whose final
        panes were written, or, undated (``event_time`` None), processed
        into the dead letters before it."""
        if event_time is None:
            return offset < self.processed
        return offset < self.read and final_at(event_time) <= self.horizon

    @staticmethod
    def parse(offset, metadata):
        try:
            found = json.loads(metadata or '')
            read = int(found['r'])
            return Resume(offset, float(found['h']), float(found['t']),
                          read, int(found.get('p', read)))
        except (ValueError, KeyError, TypeError):
            return None


def metadata(horizon, committed_at, read, processed=None) -> str:
    found = {'h': horizon, 't': committed_at, 'r': read}
    if processed is not None and processed != read:
        found['p'] = processed
    return json.dumps(found, separators=(',', ':'))


class _Ledger:
    def __init__(self, spec, final_at, commit):
        self.spec = spec
        self.final_at = final_at
        self.commit = commit          # [(partition, offset, metadata)] -> None
        # partition -> [[next offset, final at, stamped (the latest
        # timestamp of what the read emitted), handed over (the number of
        # the runner's commit of a read that found it; None: not yet),
        # first (the earliest window close of the read's records, where
        # the job gives late_from; else None)]]
        self.checkpoints = {}
        self.fresh = []               # checkpoints not yet handed over
        self.final_at_max = {}        # partition -> latest final_at so far
        self.read = {}                # partition -> next offset read
        # partition -> the next offset of what reads handed over before the
        # runner's last look (the "r" of a commit): a record read but not
        # yet handed over is not in the horizon the runner took, which may
        # then be past its windows (it is late: its dead letter, its only
        # output, is written after the look)
        self.read_looked = {}
        # partition -> the offset before which every record's output is
        # written or in window state (nothing of it pending)
        self.processed = {}
        self.committable = {}         # partition -> offset
        # partition -> [[offset, final at, settled (once nothing stamped
        # at or before it is pending, all the record produced is done),
        # payload]] of the records that may be late (their windows final
        # under the watermark they were read under), in offset order: each
        # registered as its dead letter's origin (deadletter.register_origin)
        self.maybe_late = {}
        self.handed = 0               # the runner's commits of reads so far
        self.looked = 0               # those before the runner's last look
        self.horizon = None
        # the highest horizon the committable offsets were taken under
        # (or the resumed commit's): windows final then stay final, so no
        # commit carries a lower one (the runner's horizon dips below
        # final windows while a late record is pending)
        self.high = None
        self.committed_at = 0.0
        self.dirty = False


def _key(spec):
    return (spec.brokers, spec.topic, spec.group, spec.config)


def track(spec, final_at, commit):
    """The ledger of ``spec``'s topic and group (made on first use)."""
    with _LOCK:
        ledger = _LEDGERS.get(_key(spec))
        if ledger is None:
            ledger = _LEDGERS[_key(spec)] = _Ledger(spec, final_at, commit)
        return ledger


def started(spec, partition, offset, horizon=None):
    """A read of ``partition`` starts at ``offset`` (nothing read yet);
    ``horizon``: that of the commit it resumes (its final windows stay
    final)."""
    with _LOCK:
        ledger = _LEDGERS[_key(spec)]
        if horizon is not None and horizon < COMPLETE and \
                (ledger.high is None or horizon > ledger.high):
            ledger.high = horizon
        ledger.read.setdefault(partition, offset)
        ledger.read_looked.setdefault(partition, offset)
        ledger.processed.setdefault(partition, offset)
        ledger.committable.setdefault(partition, offset)


def emitted(spec, partition, next_offset, newest_seconds, stamped=None,
            steps=(), late=(), first=None):
    """Records up to ``next_offset`` were emitted, the newest (by the event
    time the windows use) at ``newest_seconds`` (None: nothing new since the
    last), the latest value the read emitted timestamped ``stamped``
    (seconds; None: it emitted none, all were skipped).  ``steps``:
    ``(offset, newest)`` within the read, in offset order (the records
    before ``offset`` are no newer than ``newest``), so that a commit may
    stop inside a read (a read may take a whole partition's backlog).
    ``late``: ``(offset, final at, stamped, payload)`` of the records that
    may be late (final at or before the watermark they were read under,
    their values stamped ``stamped``), registered as their dead letters'
    origins (see ``release``).  ``first``: where the job's late dead
    letters name their output (``io.Context.late_from``) and a restart
    cannot keep a record out of its final windows one by one (sessions:
    ``windows.LateFrom.keeps_out`` false), the earliest close of a window
    of the records emitted (the first of the earliest record's windows to
    close; None: none dated, or the restart keeps them out): a restart
    reads them again unless final, so no commit carries a horizon past it
    (see ``release``)."""
    with _LOCK:
        ledger = _LEDGERS[_key(spec)]
        if late:
            ledger.maybe_late.setdefault(partition, []).extend(
                [offset, final, max(final, stamp + _AFTER), raw]
                for offset, final, stamp, raw in late)
        final = ledger.final_at_max.get(partition, float('-inf'))
        stamped = float('-inf') if stamped is None else stamped + _AFTER
        points = ledger.checkpoints.setdefault(partition, [])
        for offset, newest in list(steps) + [(next_offset, newest_seconds)]:
            if newest is not None:
                final = max(final, ledger.final_at(newest)
                            if ledger.final_at else float('inf'))
            point = [offset, final, stamped, None, first]
            points.append(point)
            ledger.fresh.append(point)
        ledger.final_at_max[partition] = final
        ledger.read[partition] = next_offset


# "Just after" a timestamp (see transforms/io/pubsub.py).
_AFTER = 0.01


def read_committed():
    """The runner committed a read's bundle: the checkpoints emitted until
    now are handed over (what their records produced is pending downstream
    or written); the Pub/Sub ledgers are told too."""
    from transforms.io import _pubsub_acks  # pylint: disable=import-outside-toplevel
    with _LOCK:
        for ledger in _LEDGERS.values():
            _handed(ledger)
    _pubsub_acks.read_committed()


def _handed(ledger):
    ledger.handed += 1
    for point in ledger.fresh:
        point[3] = ledger.handed
    ledger.fresh = []


def release(horizon, pending=None):
    """Every window closing by ``horizon`` (event time, seconds; inf at the
    end of a run) has emitted its final pane and all it produced is
    written, and no element pending downstream of the reads is stamped at
    or before ``pending`` (None: nothing is pending): commit, per partition, up
    to the first record not yet final (its windows are not final, or what
    its read emitted may still be pending: a record the job cannot date is
    a dead letter once decoded), the horizon of Pub/Sub's
    acknowledgements (transforms/io/_pubsub_acks.py) per partition.

    A record that may be late, handed over but maybe still pending before
    its decode, is not yet decided: in its window (its final pane written
    if the horizon is past it) or late (its dead letter, its only output,
    written after this look).  A restart must skip it in the first case
    and read it again in the second, so no commit may carry a horizon past
    its windows: the horizon committed stops just before them (the
    restart then rolls its windows back and reads them again, it with
    them), or, where an earlier commit's horizon is past them already (it
    is surely late), nothing is committed until it is settled."""
    due = []
    forgotten = []
    now = time.time()
    told, pending = pending, float('inf') if pending is None else pending
    with _LOCK:
        for ledger in _LEDGERS.values():
            if horizon == float('inf'):
                _handed(ledger)
                ledger.looked = ledger.handed
                high = horizon
            else:
                high = horizon if ledger.high is None else \
                    max(horizon, ledger.high)
            processed = {}
            for partition, points in ledger.checkpoints.items():
                # Checkpoints are in offset order: a prefix of them is
                # processed (handed over before the runner looked, nothing
                # they emitted pending), and of that a prefix final ("final
                # at" only grows).
                count = 0
                for point in points:
                    if point[3] is None or point[3] > ledger.looked:
                        break
                    ledger.read_looked[partition] = max(
                        ledger.read_looked.get(partition, 0), point[0])
                for point in points:
                    if point[3] is None or point[3] > ledger.looked or \
                            point[2] > pending:
                        break
                    count += 1
                processed[partition] = count
                if count:
                    ledger.processed[partition] = max(
                        ledger.processed.get(partition, 0),
                        points[count - 1][0])
            undecided = _settle(ledger, pending, high, forgotten)
            defer = False
            while True:
                if undecided is not None:
                    if ledger.high is not None and \
                            undecided <= ledger.high:
                        defer, high = True, ledger.high
                        break
                    high = undecided - _BEFORE if ledger.high is None \
                        else max(ledger.high, undecided - _BEFORE)
                # A record a restart reads again (its windows not all
                # final at the horizon committed) must have none of them
                # final there: the restart would keep that window's pane
                # and find the record late for it, counting it twice (a
                # report of video_qoe in its session, never final before
                # the read ends, and in a rollup window that is).
                undecided = _first_open(ledger, high)
                if undecided is None:
                    break
            if horizon != float('inf'):
                ledger.high = high
            moved = False
            for partition, points in ledger.checkpoints.items():
                done = 0
                while done < processed.get(partition, 0) and \
                        points[done][1] <= high:
                    done += 1
                if done:
                    ledger.committable[partition] = points[done - 1][0]
                    del points[:done]
                    moved = True
            ledger.dirty = ledger.dirty or moved
            if defer:
                continue
            if ledger.horizon is not None and high <= ledger.horizon \
                    and not ledger.dirty:
                continue
            if horizon != float('inf') and \
                    now - ledger.committed_at < MIN_INTERVAL:
                continue
            ledger.horizon = high
            ledger.committed_at = now
            ledger.dirty = False
            offsets = [(p, offset, metadata(
                high if high != float('inf') else COMPLETE, now,
                max(offset, ledger.read_looked.get(p, offset)),
                max(offset, ledger.processed.get(p, offset))))
                for p, offset in sorted(ledger.committable.items())]
            due.append((ledger.commit, offsets))
    if forgotten:
        from transforms import deadletter  # pylint: disable=import-outside-toplevel
        deadletter.forget_origins(forgotten)
    for commit, offsets in due:
        commit(offsets)
    for listener, _, _ in list(_LISTENERS):
        listener(horizon, horizon if told is None else told)


# A horizon committed "just before" a window closes (seconds).
_BEFORE = 0.001


def _settle(ledger, pending, high, forgotten):
    """Drops the records that may be late and are settled: handed over,
    with nothing pending stamped at or before the later of their values'
    timestamp and their windows' close (what they produce is stamped
    before: their decoded records and partials by event time, a late
    value at its window's end): they are in their window, whose final
    pane is then written if it closes by the horizon, or their late dead
    letters are written.  (Not the processed position: it counts a read
    processed once nothing stamped at or before its values is pending,
    and the values of a local read are stamped with its estimator's
    watermark, which starts empty: its decoded records may still be
    pending then.)  Their origins no dead letter took are
    forgotten (``forgotten``: ``(payload, tag)``), so that no other
    payload's dead letter takes them.  Returns the earliest "final at" of
    those handed over but not settled whose windows close by ``high``
    (None: none)."""
    undecided = None
    for partition, entries in ledger.maybe_late.items():
        read = ledger.read_looked.get(partition, 0)
        kept = []
        for entry in entries:
            offset, final, settled, raw = entry
            if offset < read and settled <= pending:
                forgotten.append((raw, origin_tag(partition, offset)))
                continue
            kept.append(entry)
            if offset < read and final <= high and \
                    (undecided is None or final < undecided):
                undecided = final
        entries[:] = kept
    return undecided


def _first_open(ledger, high):
    """The earliest window close, by ``high``, of the records a restart
    would read again under a commit carrying ``high``: handed over before
    the runner's look (what was not is late for the windows final at its
    horizon: its late dead letters name their output), their windows not
    all final by ``high`` (else they are committed, or skipped as in
    final panes).  None: none closes by ``high``.  Only where the job
    gives ``late_from`` (``first``); for fixed windows the first close is
    the last, and this holds nothing back."""
    found = None
    for points in ledger.checkpoints.values():
        for point in points:
            if point[3] is None or point[3] > ledger.looked:
                break
            first = point[4]
            if first is not None and point[1] > high and first <= high \
                    and (found is None or first < found):
                found = first
    return found


def origin_tag(partition, offset) -> str:
    """The tag a record's dead letter carries after the source URI."""
    return f'partition={partition}&offset={offset}'


def prepare():
    """The runner is about to take a horizon: what reads handed over until
    now is visible to it (see ``listen``)."""
    with _LOCK:
        for ledger in _LEDGERS.values():
            ledger.looked = ledger.handed
    for _, _, on_prepare in list(_LISTENERS):
        on_prepare()


def listen(on_release, on_forget, on_prepare):
    """Another source's ledger (Pub/Sub, :mod:`transforms.io._pubsub_acks`)
    is told every ``release(horizon, pending)`` too (``pending``: no
    element pending downstream of the reads is stamped at or before it),
    ``on_prepare()`` before the runner takes the horizon it releases, and
    ``on_forget()`` when a new run starts."""
    with _LOCK:
        if (on_release, on_forget, on_prepare) not in _LISTENERS:
            _LISTENERS.append((on_release, on_forget, on_prepare))


def tracking() -> bool:
    """Whether any read in this process waits for final records."""
    return bool(_LEDGERS) or bool(_LISTENERS)


def forget():
    """Drop every ledger (a new run in this process)."""
    from transforms import deadletter  # pylint: disable=import-outside-toplevel
    deadletter.forget_origins()
    with _LOCK:
        _LEDGERS.clear()
        listeners = list(_LISTENERS)
        _LISTENERS.clear()
    for _, on_forget, _ in listeners:
        on_forget()
