"""What the Kafka and Pub/Sub tests of per-window late letters share
(``--window sliding:2m/1m``, logs, trades and sensors): a record is in two
windows and may be late for each, one letter per window naming the record,
its window and key; a killed run left one record's letter for its first
window only; the restart must write every (record, window) letter exactly
once."""
import collections
import importlib
from urllib.parse import quote

import pyarrow.dataset as ds

from transforms import aggregate, deadletter
from transforms import io as transforms_io
from transforms.io import parquet, synthetic

WINDOW = 'sliding:2m/1m'
SIZE, PERIOD = 120, 60


def _logs_key(payload):
    from transforms.logs import decoders
    record = decoders.make_decoder('auto')(payload.decode())
    return float(record.event_time), record.service


def _trades_key(payload):
    from transforms.market import decoders
    record = decoders.make_decoder('auto')(payload.decode())
    return float(record.event_time), record.symbol


def _sensors_key(payload):
    from transforms.sensors import decoders
    record = decoders.make_decoder('auto')(payload.decode())
    return float(record.event_time), (record.sensor_id, record.metric)


# job -> (its synthetic stream, the grouping its late letters name, the
# event time and key of a record from its payload: the tests' oracle, read
# by the job's own decoder)
JOBS = {
    'logs': ('synthetic://logs?events=200&seed=3', 'service_stats',
             _logs_key),
    'trades': ('synthetic://trades?events=200&seed=3&rate=1', 'bars',
               _trades_key),
    'sensors': ('synthetic://sensors?events=200&seed=3&sensors=4',
                'stats', _sensors_key),
}


class SlidingLetters:
    """The stream of ``job`` (``records``: (event time, payload) pairs, no
    empty payload) and each record's letters."""

    def __init__(self, job):
        self.job = job
        self.module = importlib.import_module(f'pipelines.{job}')
        uri, self.output, key_of = JOBS[job]
        self.records = [(t, p) for t, p in synthetic.generate(
            transforms_io.parse_uri(uri)).records() if p]

        def dated(payload):
            try:
                return key_of(payload)
            except Exception:  # pylint: disable=broad-except
                return None        # a decode dead letter
        self.found = [dated(payload) for _, payload in self.records]
        self.killed = next(i for i in range(5, len(self.records))
                           if self.found[i])

    def windows(self, i):
        """The names of the windows of dated record i, by their end."""
        at, _ = self.found[i]
        end = (int(at) // PERIOD * PERIOD + PERIOD) * 1_000_000
        return [f'{self.output}@{e}'
                for e in range(end, end + SIZE * 1_000_000,
                               PERIOD * 1_000_000)]

    def tag(self, i, window):
        _, key = self.found[i]
        return f'window={window}&key={quote(str(key), safe="")}'

    def leave_killed(self, sink, origin):
        """Writes into ``sink``'s dead letters the letter a killed run
        left: record ``self.killed``'s for its first window
        (``origin``: its ``URI#partition=0&offset=O`` or ``#message=ID``)."""
        folder = sink / 'dead_letter' / 'unwindowed'
        folder.mkdir(parents=True)
        first = self.windows(self.killed)[0]
        (folder / 'dead_letter-killed.parquet').write_bytes(
            parquet.encode_parquet([deadletter.dead_letter(
                self.records[self.killed][1], aggregate.LATE_STAGE, 'late',
                f'{origin}&{self.tag(self.killed, first)}', claim=False)],
                deadletter.DeadLetter))

    def run(self, source, sink):
        """The restart: the job, streaming, past every window."""
        from pipelines import run
        return run.run(self.module, [
            '--source', source, '--streaming', '--sink', f'parquet://{sink}',
            '--window', WINDOW,
            '--trigger', 'late=1,lateness=1h,accumulating', '--no-summary'])

    def check(self, sink, source, summary, index_of):
        """The restart's ``summary`` and ``sink``: every assignment late,
        but the one whose letter the sink held; each (record, window) letter
        exactly once, naming the record (``index_of(origin tag)`` -> its
        index), its window and key; undatable records one decode dead
        letter each."""
        assert summary['read'] == len(self.records) and summary['balanced']
        table = ds.dataset(f'{sink}/dead_letter').to_table(
            columns=['stage', 'source']).to_pylist()
        assert summary['late_kept'] == sum(
            r['stage'] == aggregate.LATE_STAGE for r in table) - 1
        assert max(collections.Counter(r['source'] for r in table)
                   .values()) == 1
        by_record = collections.defaultdict(list)
        for row in table:
            assert row['source'].startswith(f'{source}#'), row
            origin, named = deadletter.split_tag(
                row['source'][len(source) + 1:])
            by_record[index_of(origin)].append((row['stage'], named))
        assert sorted(by_record) == list(range(len(self.records)))
        for i, letters in by_record.items():
            if self.found[i] is None:
                assert [stage for stage, _ in letters] == \
                    [f'decode.{self.job}'], (i, letters)
                continue
            # the oracle: a dated record's two windows, from its event
            # time, for one key, both read from its payload
            assert sorted(letters) == sorted(
                (aggregate.LATE_STAGE, self.tag(i, w))
                for w in self.windows(i)), (i, letters)
