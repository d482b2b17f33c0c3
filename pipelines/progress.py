"""Live progress of a local run on standard error.

While a job runs, a thread samples its counters and the pipeline's low
watermark: records read and per second, the watermark, panes and rows written,
dead letters so far.  On a terminal this is one line that tqdm keeps updating;
otherwise (a log file, CI) a plain line every few seconds; nothing with
``--no-progress``.
"""
import datetime
import sys
import threading
import time
import typing

from tqdm import tqdm

TTY_INTERVAL_S = 0.5      # a terminal line is redrawn this often
PLAIN_INTERVAL_S = 5.0    # a log line is written this often


class Snapshot(typing.NamedTuple):
    read: int = 0
    watermark: typing.Optional[datetime.datetime] = None
    panes: int = 0
    rows: int = 0
    dead_letters: int = 0


def snapshot(counters: dict, watermark=None) -> Snapshot:
    """A job's counters (name -> value) and a Beam Timestamp -> Snapshot."""
    when = None
    if watermark is not None:
        when = datetime.datetime.fromtimestamp(
            watermark.micros / 1e6, tz=datetime.timezone.utc)
    return Snapshot(
        read=counters.get('read', 0),
        watermark=when,
        panes=sum(v for k, v in counters.items() if k.startswith('panes.')),
        rows=sum(v for k, v in counters.items()
                 if k.startswith('rows_written.')),
        dead_letters=counters.get('dead_letters', 0)
        + counters.get('late_dead_letters', 0))


def _watermark_text(s: Snapshot) -> str:
    return s.watermark.strftime('%Y-%m-%dT%H:%M:%SZ') if s.watermark else '-'


def describe(s: Snapshot) -> str:
    """What follows the record count on the line."""
    return (f'watermark {_watermark_text(s)}, panes {s.panes}, '
            f'rows written {s.rows}, dead letters {s.dead_letters}')


class Progress:
    """Shows ``sample()`` (-> Snapshot) on ``stream`` until :meth:`stop`.

    ``tty`` defaults to whether the stream is a terminal."""

    def __init__(self, job, sample, stream=None, tty=None, interval_s=None):
        self._job = job
        self._sample = sample
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = interval_s or (
            TTY_INTERVAL_S if self._tty else PLAIN_INTERVAL_S)
        self._stop = threading.Event()
        self._thread = None
        self._bar = None
        self._started = None
        self._last = Snapshot()

    def start(self):
        self._started = time.monotonic()
        if self._tty:
            self._bar = tqdm(
                total=None, desc=self._job, unit=' records', file=self._stream,
                dynamic_ncols=True, leave=True, mininterval=0,
                bar_format='{desc}: {n_fmt} read [{elapsed}, {rate_fmt}'
                           '{postfix}]')
        self._thread = threading.Thread(
            target=self._loop, name='progress', daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(self._interval):
            self._show()

    def _take(self) -> Snapshot:
        try:
            s = self._sample()
        except Exception:   # pylint: disable=broad-except
            s = None        # a sample that fails (mid-update) shows the last
        if s is not None:
            if s.watermark is None:
                # Once every step is done the pipeline has no watermark left
                # to show: keep the last one seen.
                s = s._replace(watermark=self._last.watermark)
            self._last = s
        return self._last

    def _show(self, final=False):
        s = self._take()
        if self._bar is not None:
            self._bar.set_postfix_str(describe(s), refresh=False)
            self._bar.update(max(0, s.read - self._bar.n))
            self._bar.refresh()
        elif not final:
            seconds = max(time.monotonic() - self._started, 1e-9)
            self._stream.write(
                f'{self._job}: {s.read} records read '
                f'({s.read / seconds:.0f}/s), {describe(s)}\n')
            self._stream.flush()

    def stop(self):
        """Stops the thread; a terminal line is drawn a last time and kept."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._show(final=True)
            self._bar.close()
