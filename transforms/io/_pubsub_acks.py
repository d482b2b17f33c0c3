"""Which Pub/Sub messages a local run may acknowledge, and what a restart
resumes: the Pub/Sub side of :mod:`transforms.io._kafka_commits`.

The bundle-based local runner keeps window state in memory: a message whose
windows have not emitted their final panes is lost with the process if it
was acknowledged.  So the local Pub/Sub read (``transforms/io/pubsub.py``)
holds every message it pulls un-acknowledged, its lease renewed (the ack
deadline set to ``LEASE_SECONDS`` at once, then every ``RENEW_SECONDS``
again), and acknowledges it only once it is *final*: its windows have all
emitted their final panes (``io.Context.final_at`` of the event time the
job reads from the payload) and all they produced is written, and nothing
it produced is still pending (its element's timestamp is before every
pending element's: a message the job cannot date, or a late one, is final
once its dead letter is written).
The runner tells when that holds (``release``, through
``_kafka_commits.release``, called by pipelines/local_runner.py between
bundles when nothing is pending downstream of the reads).  Unlike Kafka
offsets, acknowledgements are per message: no message waits for another.

A killed run's un-acknowledged messages are delivered again once their
leases expire.  Before each acknowledgement, where the job writes files on
a local disk, a state file beside them (``STATE_FILE``) records::

    {"h": horizon (s), "t": wall-clock time (s), "ids": [message ids whose
     final panes are written and whose acknowledgement may not have
     reached the service: those about to be acknowledged, then, on a
     restart, those of the state it resumed not yet settled], "ended":
     false, "kept": {message id: the
     horizon (s) by which its windows hold it, of the messages held on
     that were handed over before the look that took it, some of their
     windows closing by it; only where the job gives windows.LateFrom
     with keeps_out}}

(into a ``bigquery://`` sink, the same state is appended to a table of the
sink's dataset: ``bigquery.AckState``) and a restart (``recover``, called
before the run by pipelines/run.py)

* removes what the killed run wrote after ``t`` and the files (rows) of
  windows not final at ``h`` for the grouping that made them (the job's
  lateness, or its ROW_LATENESS; ``_windowed_files.roll_back``,
  ``bigquery.roll_back``): their messages were
  not acknowledged, they come again and are written again;
* skips a message delivered again whose id is in ``ids``: its final panes
  are written, its acknowledgement may not have reached the service
  (counted ``filtered.replayed_final``, and acknowledged), and lists
  those ids in every state it writes, after its own, until such a
  message has come again, been skipped and the acknowledge call for it
  has returned (``_Ledger.replaying``, ``_Ledger.settled``): it comes
  again only once the killed run's leases expire, and a state of the
  restart written before that (acknowledging a message of its own: an
  undated one whose dead letter is written, say) which did not list it
  would have a second restart read it again, counted twice.  The state
  is written before the acknowledgement it covers, so a kill between
  the two leaves a state listing it; once the call returned the service
  has it.  (So a state lists the killed run's last batch and what that
  run carried itself beside the restart's own batch; a message whose
  acknowledgement did reach the service never comes again and stays
  listed until a run ends.);
* skips a message delivered again whose dead letter the sink holds (its
  only output, written before the kill but maybe well before its
  acknowledgement: the dead letter carries the message id, see
  ``deadletter.register_origin``; counted
  ``filtered.replayed_dead_letter``, and acknowledged); a message with
  several outputs (video_qoe: a report's session and rollups) whose late
  dead letters name their output is read again, and kept out of just the
  outputs whose dead letters the sink holds (``deadletter.output_source``);
* keeps a message delivered again whose id is in ``kept`` out of those of
  its windows closing by the horizon listed with it
  (``deadletter.Origin.final_by``, dropped by the count step before the
  grouping, ``transforms.aggregate``) and reads
  it into the others (sliding windows: a message in several, the first
  closing a period before the last; all of them closing by it: skipped
  as above);
* starts the watermark at ``h`` (windows final then stay closed) and holds
  it there until the killed run's leases have expired (the subscription's
  ack deadline, at least ``LEASE_SECONDS``), so that its messages, which
  come again only then, are not late (an idle stop waits as long).

Why ``kept`` is exact.  A message handed over before the look that took
``h`` is, for each of its windows closing by ``h`` (final and written at
that look), in that final pane, or it was late for it.  A late one was
registered as possibly late when it was pulled (its first window final
under the watermark it was read under: the grouping that decides
lateness is behind it; ``hold(maybe_late=True)``), and such a message is
*settled* once handed over with nothing pending stamped at or before
the later of its first window close and its own timestamp (in its
windows, or its late letters written).  No state records a horizon past
the first window of one handed over and not settled: the horizon stops
just before it, or, where the horizon already recorded (or resumed) is
past it (it came after that window was final), no state is written until
it settles (``_kept_before_unsettled``).  So every message a state lists
as kept is settled, its late letters written before the look and kept by
the roll-back (the restart finds them, ``dead_lettered``), or in those
panes: either way already counted there.  A message handed over after
the look is not listed: it is late for the windows final at ``h`` and is
read again whole, as before (its letters written after ``t`` are rolled
back).  The recorded horizon never goes back (``_recorded``): a message
kept at one state is kept at the next, its windows closing by the older
horizon still holding it (listed with the newer one).  A restart lists
the kept messages of the state it resumes, with their horizons, at its
own states until they come again and are listed by their own entries
(or are skipped whole and their acknowledge call returned, as for
``ids``): a restart's state written before the killed run's leases
expire must not forget them.
Without ``keeps_out`` (sessions: a session a message was assigned to is
not the one it closes in) the horizon is held before the first window
close of every held message instead (``_held_before_first``); jobs
without ``late_from`` (fixed windows) acknowledge as before.

A run that ends acknowledges everything and records ``"ended": true``: the
next run starts afresh.  Without a local file sink or a BigQuery sink there
is no state:
nothing is rolled back or skipped, and a message whose acknowledgement a
kill interrupted is counted again (at least once; never lost).
"""
import json
import logging
import os
import threading
import time
import typing

from transforms import deadletter

_LOG = logging.getLogger(__name__)
_LOCK = threading.Lock()
_LEDGERS = {}                 # subscription -> _Ledger
_RESUMES = {}                 # subscription -> Resume (set by recover)
_STATE_PATHS = {}             # subscription -> state file (set by recover)
_GENERATION = [0]             # runs in this process (forget() counts them)
# The ack deadline the read keeps on a held message (seconds): how long a
# killed run's messages wait before they are delivered again.
LEASE_SECONDS = 10
RENEW_SECONDS = 3.0
# Acknowledge at most this often while a stream runs (a round trip).
MIN_INTERVAL = 0.5
# Ack ids per acknowledge / modify_ack_deadline request.
CHUNK = 1000
# The horizon a run that ended records (every window it read is final).
COMPLETE = 1e15
STATE_FILE = '_pubsub_acks.json'


class Resume(typing.NamedTuple):
    """What the last run on a subscription left, for the next one."""
    horizon: float            # windows closing by then were final
    committed_at: float       # wall-clock time of the last state
    ids: frozenset            # messages whose acknowledgement may be lost
    hold_seconds: float       # until the killed run's leases have expired
    # messages whose dead letters the sink holds (set by dead_lettered)
    dead_lettered: frozenset = frozenset()
    # message id -> the outputs ('window=NAME&key=K') whose late dead
    # letters the sink holds, of a message with several (set by
    # dead_lettered; see deadletter.output_source)
    outputs_written: typing.Optional[dict] = None
    # message id -> the horizon by which its windows hold it, of messages
    # held then, handed over before a look that took it: kept out of
    # their windows closing by it (see release)
    kept: typing.Optional[dict] = None

    @property
    def complete(self) -> bool:
        return self.horizon >= COMPLETE


def state_path(directory, subscription) -> str:
    """The state file of ``subscription`` under a sink ``directory``."""
    name = subscription.replace('projects/', '').replace(
        '/subscriptions/', '-').replace('/', '-')
    return os.path.join(directory, STATE_FILE.replace(
        '.json', f'-{name}.json'))


def _write(path, state):
    if not isinstance(path, str):
        path.write(state)     # a state kept with the sink (bigquery.AckState)
        return
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    temp = f'{path}.tmp-{os.getpid()}'
    with open(temp, 'w', encoding='utf-8') as f:
        json.dump(state, f, separators=(',', ':'))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def _read(path):
    try:
        if isinstance(path, str):
            with open(path, encoding='utf-8') as f:
                found = json.load(f)
        else:
            found = path.read()
            if found is None:
                return None
        return (float(found['h']), float(found['t']),
                frozenset(found.get('ids', ())), bool(found.get('ended')),
                {str(m): float(h)
                 for m, h in (found.get('kept') or {}).items()})
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f'{path}: not a Pub/Sub ack state ({e}); remove it '
                         f'to start the subscription afresh') from None


def recover(subscription, path, ack_deadline):
    """Before a local run reads ``subscription`` into file sinks beside
    ``path`` (the state file): ``(horizon, committed_at)`` to roll the sinks
    back to where the last run was killed, or None where it ended (or none
    ran).  Marks this run as started: a run killed before it acknowledges
    anything leaves only files written after now."""
    found = _read(path)
    now = time.time()
    with _LOCK:
        _STATE_PATHS[subscription] = path
        if found is None or found[3]:
            _RESUMES.pop(subscription, None)
            _write(path, {'h': COMPLETE, 't': now, 'ids': [],
                          'ended': False})
            return None
        horizon, committed_at, ids, _, kept = found
        _RESUMES[subscription] = Resume(
            horizon, committed_at, ids,
            max(LEASE_SECONDS, ack_deadline or 0) + 1.0, kept=kept)
    return horizon, committed_at


def dead_lettered(subscription, message_ids, outputs=None):
    """After the roll-back: the messages of ``subscription`` whose dead
    letters the sink holds (``deadletter.origins_written``); a restart
    skips them when they come again.  ``outputs``: message id -> the
    outputs of a message with several whose late dead letters the sink
    holds; such a message is read again and kept out of those alone."""
    with _LOCK:
        found = _RESUMES.get(subscription)
        if found is not None:
            _RESUMES[subscription] = found._replace(
                dead_lettered=frozenset(message_ids),
                outputs_written={m: frozenset(o) for m, o in
                                 (outputs or {}).items()})


def origin_tag(message_id) -> str:
    """The tag a message's dead letter carries after the source URI."""
    return f'{ORIGIN_PREFIX}{message_id}'


ORIGIN_PREFIX = 'message='


def resume(subscription):
    """The Resume ``recover`` found for ``subscription`` (None: fresh)."""
    with _LOCK:
        return _RESUMES.get(subscription)


class _Ledger:
    """The messages a read holds, and the thread that renews their leases."""

    def __init__(self, subscription, client):
        self.subscription = subscription
        self.client = client
        # message id -> [ack id, final at (its windows), stamped (its
        # element's timestamp), handed over (the number of the read start
        # that found its read's output committed; None: not yet), its
        # payload where it is registered as a dead letter's origin, the
        # first of its windows to close where the job gives late_from and
        # a restart cannot keep it out of its final windows (else None),
        # the same where it can (windows.LateFrom.keeps_out; else None),
        # where it may be late (registered, its first window final under
        # the watermark it was read under) when it is settled (nothing
        # pending stamped at or before it; else None)]
        self.held = {}
        self.fresh = []         # ids of the current read (not yet handed)
        self.reads = 0          # read starts so far
        self.looked = 0         # read starts before the runner's last look
        self.horizon = None
        self.recorded = None    # the horizon the last state recorded
        # whether a held message ever gave its first window close
        self.has_first = False
        # message id -> horizon: the resumed state's kept messages not yet
        # listed by their own entries here nor acknowledged (see release)
        resumed = _RESUMES.get(subscription)
        self.carried = dict(resumed.kept or {}) if resumed is not None \
            and not resumed.complete else {}
        # the resumed state's ids (their final panes written, their
        # acknowledgement maybe lost) not yet delivered again, skipped and
        # acknowledged by this run (the call returned): listed in this
        # run's states too (see settled)
        self.replaying = dict.fromkeys(sorted(resumed.ids)) \
            if resumed is not None and not resumed.complete else {}
        self.acked_at = 0.0
        # message id -> when (wall clock) this run acknowledged it, kept
        # REMEMBER_SECONDS (see acknowledged)
        self.acked = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, name=f'lease {subscription}', daemon=True)
        self._thread.start()

    def hold(self, message_id, ack_id, final_at, stamped,
             origin=None, first=None, kept_from=None,
             maybe_late=False) -> bool:
        """Holds a pulled message until it is final: its windows are final
        by ``final_at`` and nothing it produced, stamped at ``stamped`` or
        later, is pending.  ``first``: the first of its windows to close,
        where the job gives late_from (``io.Context.late_from``) and a
        restart cannot keep it out of single windows (sessions: no state
        records a horizon past it, see ``release``); ``kept_from``: the
        same where it can (``windows.LateFrom.keeps_out``: a restart keeps
        it out of its windows closing by a state's horizon, see
        ``release``); ``maybe_late``: with ``kept_from``, it may be late
        (registered as its dead letters' origin), not settled until
        nothing pending is stamped at or before the later of ``kept_from``
        and ``stamped``.  False if it was held already (delivered again
        while held: the new ack id is kept)."""
        with _LOCK:
            entry = self.held.get(message_id)
            if entry is not None:
                entry[0] = ack_id
                return False
            self.held[message_id] = [
                ack_id, final_at, stamped, None, origin, first, kept_from,
                max(kept_from, stamped) if maybe_late and
                kept_from is not None else None]
            if first is not None:
                self.has_first = True
            self.fresh.append(message_id)
            return True

    def acknowledged(self, message_id) -> bool:
        """Whether this run acknowledged ``message_id`` lately
        (``REMEMBER_SECONDS``): Pub/Sub delivers at least once, and a
        message whose acknowledgement crossed its redelivery comes again;
        read once (its outputs are written)."""
        with _LOCK:
            return message_id in self.acked

    def settled(self, message_ids):
        """A read skipped ``message_ids``, messages of the state it resumes
        delivered again (their final panes written before the restart: in
        its ``ids``, or kept out of all their windows), and its acknowledge
        call for them returned: later states need not list them.  Until
        then every state this run writes lists them (the resumed ``ids``
        in its ``ids``, the kept ones in its ``kept``, see release), so
        that a kill of this run before they came again, or before their
        acknowledgement, leaves a state by which the next restart skips
        them.  They are remembered as acknowledged by this run (delivered
        again, they are read once, see acknowledged)."""
        now = time.time()
        with _LOCK:
            for message_id in message_ids:
                self.replaying.pop(message_id, None)
                self.carried.pop(message_id, None)
            _remember_acknowledged(self, message_ids, now)

    def read_started(self):
        """A read starts: the runner committed the output of the last one
        (the residual it resumes is part of that commit)."""
        with _LOCK:
            self._written()

    def _written(self):
        self.reads += 1
        for message_id in self.fresh:
            entry = self.held.get(message_id)
            if entry is not None:
                entry[3] = self.reads
        self.fresh = []

    def lease(self, ack_ids):
        """Sets the ack deadline of freshly pulled messages to the lease."""
        self._modify(ack_ids, LEASE_SECONDS)

    def acknowledge(self, ack_ids):
        for start in range(0, len(ack_ids), CHUNK):
            self.client.acknowledge(subscription=self.subscription,
                                    ack_ids=ack_ids[start:start + CHUNK])

    def _modify(self, ack_ids, seconds):
        for start in range(0, len(ack_ids), CHUNK):
            self.client.modify_ack_deadline(
                subscription=self.subscription,
                ack_ids=ack_ids[start:start + CHUNK],
                ack_deadline_seconds=seconds)

    def _renew(self):
        while not self._stop.wait(RENEW_SECONDS):
            with _LOCK:
                ack_ids = [entry[0] for entry in self.held.values()]
            try:
                self._modify(ack_ids, LEASE_SECONDS)
            except Exception as e:  # pylint: disable=broad-except
                # An expired lease only means a message comes again (it
                # is then skipped while held, see hold()).
                _LOG.warning('%s: renewing leases: %s', self.subscription, e)

    def stop(self):
        self._stop.set()


def track(subscription, client_factory):
    """The ledger of ``subscription`` (made on first use, its client by
    ``client_factory()``)."""
    from transforms.io import _kafka_commits  # pylint: disable=import-outside-toplevel
    with _LOCK:
        ledger = _LEDGERS.get(subscription)
        if ledger is None:
            ledger = _LEDGERS[subscription] = _Ledger(subscription,
                                                      client_factory())
    _kafka_commits.listen(release, forget, prepare)
    return ledger


def read_committed():
    """The runner committed a read's bundle: the messages that read pulled
    are handed over (what they produce is pending downstream or written)."""
    with _LOCK:
        for ledger in _LEDGERS.values():
            ledger._written()     # pylint: disable=protected-access


def prepare():
    """The runner is about to look for final records: what reads handed
    over until now is visible to that look."""
    with _LOCK:
        for ledger in _LEDGERS.values():
            ledger.looked = ledger.reads


def release(horizon, pending):
    """Every window closing by ``horizon`` (event time, seconds; inf at the
    end of a run) has emitted its final pane and all it produced is
    written, and no element pending downstream of the reads is stamped at
    or before ``pending``: acknowledge the messages held for them (the
    state written first) that were handed over before the runner looked.

    A message a restart receives again (held, not acknowledged) with
    windows final at the horizon the state records must stay out of
    them, or the restart would keep that window's pane and find the
    message late for it: counted twice (sliding windows, video_qoe's
    session and rollups: the jobs that give ``late_from``, whose windows
    close at different times).  Where the job's windows allow it
    (``kept_from``), the state lists such messages (``kept``) and the
    restart keeps them out of those windows; the horizon used stops only
    before the first window of a message that may be late and is not
    settled (or no state is written, see ``_kept_before_unsettled``).
    Else (sessions: ``first``) the horizon used stops just before the
    first window close of every message handed over before the look whose
    windows are not all final by it, never below the one the last state
    recorded.  For every job, first, a window of a message that may be late
    and is not settled stays open until it is (``_undecided_before``)."""
    due = []
    origins = []
    now = time.time()
    with _LOCK:
        for ledger in _LEDGERS.values():
            if horizon == float('inf'):
                ledger._written()     # pylint: disable=protected-access
                ledger.looked = ledger.reads
                used = horizon
            elif now - ledger.acked_at < MIN_INTERVAL:
                continue
            else:
                used = _kept_before_unsettled(
                    ledger, _held_before_first(
                        ledger, _undecided_before(ledger, horizon, pending)),
                    pending)
                if used is None:
                    # A message that may be late for a window final at
                    # the horizon already recorded is not settled yet:
                    # no state until it is.
                    continue
            ids = [m for m, entry in ledger.held.items()
                   if entry[3] is not None and entry[3] <= ledger.looked
                   and entry[1] <= used and entry[2] <= pending]
            ended = horizon == float('inf') and not ledger.held.keys() - \
                set(ids)
            if not ids and not ended:
                continue
            entries = [ledger.held.pop(m) for m in ids]
            ack_ids = [entry[0] for entry in entries]
            _remember_acknowledged(ledger, ids, now)
            origins.extend((entry[4], origin_tag(m))
                           for m, entry in zip(ids, entries)
                           if entry[4] is not None)
            ledger.horizon = used
            ledger.acked_at = now
            recorded = _recorded(ledger, used)
            # Held on, handed over before the look, some of their windows
            # final at the horizon recorded: a restart keeps them out of
            # those (none may be late and unsettled, see
            # _kept_before_unsettled).
            listed = {m: recorded for m, entry in ledger.held.items()
                      if entry[6] is not None and entry[6] <= recorded
                      and entry[3] is not None and
                      entry[3] <= ledger.looked}
            for m in list(ids) + list(listed):
                ledger.carried.pop(m, None)
            kept = {**ledger.carried, **listed}
            # With the resumed state's ids not yet settled: a state
            # without them, written before they come again, would have the
            # next restart read them again (counted twice).
            own = set(ids)
            listed_ids = ids + [m for m in ledger.replaying if m not in own]
            due.append((ledger, ids, listed_ids, ack_ids, ended, recorded,
                        kept))
    if origins:
        # Acknowledged: a payload no dead letter took is not one of
        # theirs any longer.
        deadletter.forget_origins(origins)
    for ledger, ids, listed_ids, ack_ids, ended, recorded, kept in due:
        path = _STATE_PATHS.get(ledger.subscription)
        if path is not None and ids:
            state = {'h': recorded, 't': now, 'ids': listed_ids,
                     'ended': False}
            if kept:
                state['kept'] = kept
            _write(path, state)
        ledger.acknowledge(ack_ids)
        if path is not None and ended:
            _write(path, {'h': COMPLETE, 't': time.time(), 'ids': [],
                          'ended': True})


# "Just before" a window closes (seconds), as in _kafka_commits.
_BEFORE = 0.001


def _undecided_before(ledger, horizon, pending):
    """``horizon``, or just before the earliest window close of a message
    that may be late and is not settled, where that is earlier: the
    horizon up to which windows count as final for acknowledging and for
    the state.

    A message that may be late (read under a watermark past its windows,
    so stamped after they close) and is handed over but not settled
    (something stamped at or before its stamp is pending) may be pending
    before its decode, and then late (its dead letter not yet written:
    the restart must read it again), or in its window, whose final pane
    is written: the runner's horizon passes its windows either way (its
    value is stamped past them).  A state recording that horizon, or
    messages of those windows acknowledged by it, had a restart keep the
    window and read the message again, late under the restart's
    watermark: in the final pane and in a late dead letter (counted twice;
    the kill test's disordered case under load).  So its windows stay
    open here until it is settled: the restart rolls them back and reads
    it again with their other messages, none of them acknowledged.  Not
    where a state this run (or the killed run it resumes) recorded is past
    them already: the grouping's watermark was, so it is surely late (as
    in _kafka_commits)."""
    if horizon == float('inf'):
        return horizon
    earlier = _RESUMES.get(ledger.subscription)
    base = ledger.recorded
    if earlier is not None and not earlier.complete:
        base = earlier.horizon if base is None else max(base, earlier.horizon)
    found = horizon
    for entry in ledger.held.values():
        final, stamped, handed = entry[1], entry[2], entry[3]
        if handed is None or handed > ledger.looked or \
                final == float('-inf') or final >= stamped or \
                stamped <= pending or (base is not None and final <= base):
            continue
        found = min(found, final - _BEFORE)
    return found


def _recorded(ledger, horizon):
    """The horizon a state records: ``horizon``, never below one this run
    recorded before nor the killed run's this one resumes.

    The runner's horizon dips while a late record is pending (it stops just
    before that record's timestamp); messages final at the dip are
    acknowledged then (a dead letter written, say) but the windows final
    at the earlier, higher horizon are still final and written, and their
    messages were acknowledged: a state recording the dip would make a
    restart roll those windows back, and their messages never come again
    (lost).  Recording the higher horizon is safe: a message in the final
    pane of a window closing by it was acknowledged at the look that first
    found that window final (nothing earlier was pending then), so a
    message still held whose windows close by it came after they closed:
    it is late for them, a restart reads it again as late (or skips it if
    its dead letter is written).  Windows final when the killed run this
    one resumes stopped stay final (this run's horizon starts lower)."""
    recorded = min(horizon, COMPLETE)
    earlier = _RESUMES.get(ledger.subscription)
    if earlier is not None and not earlier.complete:
        recorded = max(recorded, earlier.horizon)
    if ledger.recorded is not None:
        recorded = max(recorded, ledger.recorded)
    ledger.recorded = recorded
    return recorded


# A horizon recorded "just before" a window closes (seconds).
_BEFORE = 0.001
# How long a run remembers the messages it acknowledged (seconds): well
# past a lease, the time a redelivery that crossed an acknowledgement
# takes to come.
REMEMBER_SECONDS = 120.0


def _remember_acknowledged(ledger, ids, now):
    """Notes ``ids`` as acknowledged at ``now`` and forgets those older
    than ``REMEMBER_SECONDS`` (under the lock)."""
    old = now - REMEMBER_SECONDS
    expired = []
    for m, at in ledger.acked.items():     # in the order acknowledged
        if at >= old:
            break
        expired.append(m)
    for m in expired:
        del ledger.acked[m]
    for m in ids:
        ledger.acked[m] = now


def _held_before_first(ledger, horizon):
    """``horizon``, or just before the first window close of a message
    handed over before the runner's look whose windows are not all final
    by it (lowered until none is), not below the horizon the ledger last
    acknowledged under (``ledger.horizon``) nor the resumed run's."""
    if not ledger.has_first:
        return horizon
    floor = ledger.horizon
    earlier = _RESUMES.get(ledger.subscription)
    if earlier is not None and not earlier.complete:
        floor = earlier.horizon if floor is None else \
            max(floor, earlier.horizon)
    high = horizon
    while True:
        found = None
        for entry in ledger.held.values():
            first, handed = entry[5], entry[3]
            if first is None or handed is None or handed > ledger.looked:
                continue
            if entry[1] > high and first <= high and \
                    (found is None or first < found):
                found = first
        if found is None:
            return high
        lowered = found - _BEFORE
        if floor is not None and lowered <= floor:
            # (its first window was final at a recorded horizon before it
            # came: it is late for it)
            return min(horizon, floor)
        high = lowered


def _kept_before_unsettled(ledger, horizon, pending):
    """The horizon to acknowledge under, for the messages a restart keeps
    out of their final windows (``kept_from``): ``horizon``, or just
    before the first window close of a message handed over before the
    look that may be late and is not settled (in its window, or pending
    before its decode with its late dead letter not yet written: a
    restart could not tell), so that no state records a horizon past a
    window of such a message; None (write no state) where the horizon
    already recorded (or resumed) is past it: it came after that window
    was final, and a state listing it as kept would keep it out of the
    window whose late dead letter is not written.  Settled entries are
    no longer ``maybe late``."""
    floor = ledger.recorded
    earlier = _RESUMES.get(ledger.subscription)
    if earlier is not None and not earlier.complete:
        floor = earlier.horizon if floor is None else \
            max(floor, earlier.horizon)
    top = horizon if floor is None else max(horizon, floor)
    found = None
    for entry in ledger.held.values():
        settles = entry[7]
        if settles is None:
            continue
        if settles <= pending and entry[3] is not None and \
                entry[3] <= ledger.looked:
            entry[7] = None       # settled
            continue
        if entry[3] is not None and entry[3] <= ledger.looked and \
                entry[6] <= top and (found is None or entry[6] < found):
            found = entry[6]
    if found is None:
        return horizon
    if floor is not None and found <= floor:
        return None
    return min(horizon, found - _BEFORE)


def forget():
    """Drop every ledger and resume (a new run in this process)."""
    with _LOCK:
        for ledger in _LEDGERS.values():
            ledger.stop()
        _LEDGERS.clear()
        _RESUMES.clear()
        _STATE_PATHS.clear()
        _GENERATION[0] += 1


def generation() -> int:
    """Which run of this process reads (what a read keeps is per run)."""
    return _GENERATION[0]
