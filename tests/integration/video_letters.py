"""What the Kafka and Pub/Sub tests of video_qoe's late dead letters share:
each late report makes one letter for its session and one per rollup
dimension, each naming the record's origin and its output; a killed run
left some of them in the sink; the restart must write each exactly once."""
import collections
from urllib.parse import quote

import pyarrow.dataset as ds

from transforms import aggregate, deadletter
from transforms.io import parquet
from transforms.video import decoders, rollups


class Letters:
    """The late letters' tags of ``payloads`` (the stream's records in
    order), each named by ``origin(i)`` (``URI#partition=0&offset=i``,
    ``URI#message=ID``).  ``sliding``: the job's ``--rollup_window``, a
    sliding ``(size, period)`` in seconds, whose rollup letters name
    their window too (``window=rollup@END``); None: fixed windows."""

    def __init__(self, payloads, origin, sliding=None):
        decode = decoders.make_decoder('auto')
        self.origin = origin
        self.sliding = sliding
        self.found = {}
        for i, payload in enumerate(payloads):
            try:
                found = decode(payload.decode())
            except Exception:  # pylint: disable=broad-except
                continue      # a decode dead letter, named as before
            if found is not None:
                self.found[i] = found
        self.reports = sorted(self.found)

    def outputs(self, i):
        """The tags of record i's letters: its session's and one per
        rollup dimension of its report (and, sliding, per rollup window
        holding its event time, latest first)."""
        found = self.found[i]
        keys = [key for key, _ in rollups.by_dimension(rollups.Contribution(
            found.session_id, *rollups.dims_of(found)))]
        origin = self.origin(i)
        return ([f'{origin}&window=session&key='
                 f'{quote(found.session_id, safe="")}'] +
                [f'{origin}&window={name}&key={quote(key, safe="")}'
                 for name in self._rollups(found) for key in keys])

    def _rollups(self, found):
        """The names of the rollup windows holding a report: 'rollup', or
        'rollup@END' per sliding window (END in microseconds)."""
        if self.sliding is None:
            return ['rollup']
        size, period = (int(s * 1_000_000) for s in self.sliding)
        micros = found.event_time.micros
        start = micros - micros % period
        names = []
        while start > micros - size:
            names.append(f'rollup@{start + size}')
            start -= period
        return names

    def killed(self):
        """What a killed run left: one report's letters for both outputs,
        one report's for its session only, one report's for two of its
        four rollup dimensions only (sliding: in its latest window
        only)."""
        both, session_only, two_rollups = (
            self.reports[3], self.reports[20], self.reports[40])
        return (self.outputs(both) + self.outputs(session_only)[:1] +
                self.outputs(two_rollups)[2:4])

    def leave_in(self, sink, tags):
        """Writes ``tags``' letters into the dead letters of ``sink``."""
        folder = sink / 'dead_letter' / 'unwindowed'
        folder.mkdir(parents=True)
        (folder / 'dead_letter-killed.parquet').write_bytes(
            parquet.encode_parquet([deadletter.dead_letter(
                b'kept', aggregate.LATE_STAGE, 'late', tag, claim=False)
                for tag in tags], deadletter.DeadLetter))

    def check(self, sink, summary, killed):
        """The restart's run ``summary`` and its sink: every report late
        for its session and each of its four rollups, less the outputs
        whose letters the sink held; each report's five letters exactly
        once.  Returns the dead letters' rows (stage, reason, source)."""
        assert summary['aggregated'] == 0 and summary['dropped_late'] == 0
        per_report = 1 + 4 * len(self._rollups(self.found[self.reports[0]]))
        assert summary['late_kept'] == \
            per_report * len(self.reports) - len(killed)
        table = ds.dataset(f'{sink}/dead_letter').to_table(
            columns=['stage', 'reason', 'source']).to_pylist()
        named = collections.Counter(row['source'] for row in table
                                    if '&window=' in row['source'])
        assert named == collections.Counter(
            tag for i in self.reports for tag in self.outputs(i))
        return table
