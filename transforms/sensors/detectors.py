"""Incidents per sensor: spikes, stuck values, silence, trend breaches.

:class:`SensorModel` is the detector of one sensor and metric, a plain object
fed readings in event-time order (:meth:`SensorModel.observe`), returning
the incidents it closes.  It keeps

* a *level* (EWMA, weight ``alpha``) and a *weekly profile* (one EWMA per hour
  of the week, weight ``gamma``): the expected value is level + profile, so a
  daily or weekly cycle is not an anomaly but a departure from it is;
* a robust *variance* of the residuals (EWMA, weight ``beta``, residuals
  clipped at ``clip`` standard deviations before they update anything, so an
  excursion does not teach the model that it is normal);
* a *trend* (Holt: EWMA of the level's change per second) projected
  ``horizon_s`` ahead against optional limits.

Incidents open and stay open while their condition holds, so a long
excursion is one record, not one per reading:

* ``spike``: |residual| > ``k_open`` standard deviations opens; it closes
  after ``quiet`` consecutive readings under ``k_close``;
* ``stuck``: ``stuck_readings`` equal values in a row; closes on a change;
* ``silence``: no reading for longer than ``max_silence_s``;
* ``trend``: the projected level crosses ``trend_low``/``trend_high``.

:class:`DetectIncidents` runs one model per (sensor, metric) in a stateful
DoFn: readings are buffered and released, sorted by event time, by an
event-time timer once the watermark passes the earliest of them (a batch
replay gives the incidents of the live stream; a reading older than one
already judged is counted ``detector.out_of_order`` and not judged, while
it still counts in the statistics).  In a stream a second timer fires
``max_silence + lateness`` after the last reading: a silence is declared
although no reading arrives, and a late reading within the allowed lateness
arrives before that and does not raise a false silence.  At the end of the
input, incidents still open are emitted with ``state='OPEN'``.
"""
import math
import typing

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec,
                                              ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from transforms.sensors.records import Incident

WEEK_S = 7 * 86400


class DetectorConfig(typing.NamedTuple):
    alpha: float = 0.02            # level EWMA weight per reading
    beta: float = 0.002            # residual variance EWMA weight per reading
    gamma: float = 0.05            # weekly profile EWMA weight per reading
    profile_bin_s: int = 3600      # one profile value per hour of the week
    k_open: float = 4.0            # |z| that opens a spike incident
    k_close: float = 3.0           # |z| under which a reading is quiet
    quiet: int = 150               # quiet readings that close a spike
    warmup: int = 200              # readings before anything is judged
    clip: float = 3.0              # residual clip (std devs) for updates
    stuck_readings: int = 0        # equal readings in a row (0: off)
    max_silence_s: float = 0.0     # silence longer than this (0: off)
    trend_low: typing.Optional[float] = None
    trend_high: typing.Optional[float] = None
    horizon_s: float = 3600.0      # how far ahead the trend is projected


class SensorModel:
    """The detector state of one sensor and metric (picklable)."""

    def __init__(self, sensor_id: str, metric: str, config: DetectorConfig):
        self.sensor_id = sensor_id
        self.metric = metric
        self.config = config
        self.n = 0
        self.level = None
        self.var = 0.0
        self.slope = 0.0
        self.trend_level = None
        self.profile = [0.0] * int(WEEK_S // config.profile_bin_s)
        self.last_us = None
        self.last_value = None
        self.same = 0
        self.same_start = None
        self.silence_reported = None    # last_us of the silence reported
        self.open = {}                  # kind -> dict of the open incident

    # ------------------------------------------------------------- incidents
    def _open(self, kind, t_us, value, severity, version, start_us=None):
        self.open[kind] = {'start': start_us if start_us is not None else t_us,
                           'end': t_us, 'peak': value, 'severity': severity,
                           'count': 1, 'quiet': 0, 'version': version}

    def _extend(self, kind, t_us, value, severity, peak_better):
        inc = self.open[kind]
        inc['end'] = t_us
        inc['count'] += 1
        if peak_better:
            inc['peak'] = value
            inc['severity'] = severity

    def _record(self, kind, inc, state='CLOSED') -> Incident:
        return Incident(
            sensor_id=self.sensor_id, metric=self.metric, kind=kind,
            start=Timestamp(micros=inc['start']),
            end=Timestamp(micros=inc['end']), peak_value=inc['peak'],
            severity=float(inc['severity']), reading_count=inc['count'],
            state=state, calibration_version=inc['version'])

    def _close(self, kind) -> Incident:
        return self._record(kind, self.open.pop(kind))

    def flush_open(self):
        """The incidents still open, as OPEN records (end of input)."""
        out = [self._record(kind, inc, 'OPEN')
               for kind, inc in sorted(self.open.items())]
        self.open = {}
        return out

    def silence_due(self, lateness_s: float):
        """When a silence after the last reading is declared (micros)."""
        c = self.config
        if not c.max_silence_s or self.last_us is None:
            return None
        return self.last_us + int((c.max_silence_s + lateness_s) * 1e6)

    def declare_silence(self, now_us: int):
        """A silence seen by a timer at ``now_us`` (no reading since)."""
        c = self.config
        if self.last_us is None or self.silence_reported == self.last_us:
            return None
        if now_us - self.last_us < c.max_silence_s * 1e6:
            return None
        self.silence_reported = self.last_us
        return Incident(
            sensor_id=self.sensor_id, metric=self.metric, kind='silence',
            start=Timestamp(micros=self.last_us),
            end=Timestamp(micros=self.last_us + int(c.max_silence_s * 1e6)),
            peak_value=None, severity=c.max_silence_s, reading_count=0,
            state='OPEN', calibration_version='')

    # -------------------------------------------------------------- readings
    def observe(self, t_us: int, value: float, version: str = ''):
        """One reading (event-time order) -> the incidents it closes or
        reports."""
        c = self.config
        out = []
        if self.last_us is not None and c.max_silence_s and \
                t_us - self.last_us > c.max_silence_s * 1e6 and \
                self.silence_reported != self.last_us:
            self.silence_reported = self.last_us
            out.append(Incident(
                sensor_id=self.sensor_id, metric=self.metric, kind='silence',
                start=Timestamp(micros=self.last_us),
                end=Timestamp(micros=t_us), peak_value=None,
                severity=(t_us - self.last_us) / 1e6, reading_count=0,
                state='CLOSED', calibration_version=version))
        out.extend(self._stuck(t_us, value, version))
        out.extend(self._spike_and_trend(t_us, value, version))
        self.last_us = t_us
        self.last_value = value
        return out

    def _stuck(self, t_us, value, version):
        c = self.config
        out = []
        if value == self.last_value:
            self.same += 1
        else:
            if 'stuck' in self.open:
                out.append(self._close('stuck'))
            self.same = 1
            self.same_start = t_us
        if c.stuck_readings and self.same >= c.stuck_readings:
            if 'stuck' in self.open:
                self._extend('stuck', t_us, value, self.same, True)
            else:
                self._open('stuck', t_us, value, self.same, version,
                           start_us=self.same_start)
                self.open['stuck']['count'] = self.same
        return out

    def _spike_and_trend(self, t_us, value, version):
        c = self.config
        out = []
        b = int((t_us // 1_000_000) % WEEK_S // c.profile_bin_s)
        if self.level is None:
            self.level = value
        residual = value - self.level - self.profile[b]
        # The variance EWMA starts at 0: divide by the weight it has seen so
        # far (bias correction), or early readings look c/sqrt(n beta) sigmas off.
        seen = 1.0 - (1.0 - c.beta) ** self.n
        var = self.var / seen if seen > 0 else 0.0
        sd = math.sqrt(var) if var > 0 else 0.0
        if sd > 0:
            z = residual / sd
        else:
            z = 0.0 if residual == 0 else math.copysign(math.inf, residual)
        judged = self.n >= c.warmup
        if judged:
            inc = self.open.get('spike')
            if inc is None:
                if abs(z) > c.k_open:
                    self._open('spike', t_us, value, abs(z), version)
            else:
                self._extend('spike', t_us, value, abs(z),
                             abs(z) > inc['severity'])
                if abs(z) > c.k_close:
                    inc['quiet'] = 0
                else:
                    inc['quiet'] += 1
                    if inc['quiet'] >= c.quiet:
                        out.append(self._close('spike'))
        # Update with the clipped residual (outliers do not teach the model).
        if sd > 0 and judged:
            residual = max(-c.clip * sd, min(c.clip * sd, residual))
        self.level += c.alpha * residual
        self.profile[b] += c.gamma * (1.0 - c.alpha) * residual
        self.var = (1.0 - c.beta) * self.var + c.beta * residual * residual
        # The trend follows the deseasonalised value unclipped (Holt): a
        # drift is what it is there to see.
        target = value - self.profile[b]
        if self.trend_level is None:
            self.trend_level = target
        elif t_us > self.last_us:
            dt = (t_us - self.last_us) / 1e6
            predicted = self.trend_level + self.slope * dt
            level = predicted + c.alpha * (target - predicted)
            step = (level - self.trend_level) / dt
            self.trend_level = level
            self.slope += c.alpha * (step - self.slope)
        self.n += 1
        if judged and (c.trend_low is not None or c.trend_high is not None):
            out.extend(self._trend(t_us, value, version))
        return out

    def _trend(self, t_us, value, version):
        c = self.config
        projected = self.trend_level + self.slope * c.horizon_s
        breach = ((c.trend_high is not None and projected > c.trend_high) or
                  (c.trend_low is not None and projected < c.trend_low))
        out = []
        if breach:
            limit = c.trend_high if (c.trend_high is not None and
                                     projected > c.trend_high) else c.trend_low
            ahead = (limit - self.trend_level) / self.slope \
                if self.slope else 0.0
            ahead = max(0.0, ahead)
            if 'trend' in self.open:
                self._extend('trend', t_us, value, ahead,
                             ahead < self.open['trend']['severity'])
            else:
                self._open('trend', t_us, value, ahead, version)
        elif 'trend' in self.open:
            out.append(self._close('trend'))
        return out


class _IncidentFn(beam.DoFn):
    BUFFER = BagStateSpec('buffer', PickleCoder())
    MODEL = ReadModifyWriteStateSpec('model', PickleCoder())
    NEXT = ReadModifyWriteStateSpec('next_flush', PickleCoder())
    FLUSH = TimerSpec('flush', TimeDomain.WATERMARK)
    SILENCE = TimerSpec('silence', TimeDomain.WATERMARK)
    END = TimerSpec('end', TimeDomain.WATERMARK)

    def __init__(self, config, lateness_s, silence_timer, job):
        self._config = config
        self._lateness_s = lateness_s
        self._silence_timer = silence_timer
        self._counters = {kind: Metrics.counter(job, f'anomalies.{kind}')
                          for kind in ('spike', 'stuck', 'silence', 'trend')}
        self._out_of_order = Metrics.counter(job, 'detector.out_of_order')

    def process(self, kv, buffer=beam.DoFn.StateParam(BUFFER),
                next_flush=beam.DoFn.StateParam(NEXT),
                flush=beam.DoFn.TimerParam(FLUSH),
                end=beam.DoFn.TimerParam(END)):
        key, r = kv
        if hasattr(r, 'event_us'):           # a block of readings (columnar)
            if not len(r):
                return
            buffer.add((key, r))
            t_us = int(r.event_us.min())
        else:
            t_us = r.event_time.micros
            buffer.add((t_us, r.value, r.sensor_id, r.metric,
                        r.calibration_version))
        pending = next_flush.read()
        if pending is None or t_us < pending:
            next_flush.write(t_us)
            flush.set(Timestamp(micros=t_us))
        end.set(beam_window.GlobalWindow().max_timestamp())

    def _release(self, buffer, model_state, next_flush):
        # Everything buffered when the watermark passes the earliest reading
        # is released, sorted: one firing per burst of readings (a bounded
        # replay is one firing), not one per reading.
        ready = []
        for item in buffer.read():
            if len(item) == 2:                # (key, ReadingBlock)
                (sensor_id, metric), block = item
                ready.extend(
                    (t, v, sensor_id, metric, block.version)
                    for t, v in zip(block.event_us.tolist(),
                                    block.value.tolist()))
            else:
                ready.append(item)
        ready.sort()
        buffer.clear()
        next_flush.clear()
        model = model_state.read()
        out = []
        for t_us, value, sensor_id, metric, version in ready:
            if model is None:
                model = SensorModel(sensor_id, metric, self._config)
            if model.last_us is not None and t_us <= model.last_us:
                # Older than a reading already judged, or a repeat of its
                # time (a re-sent reading): not judged twice.
                self._out_of_order.inc()
                continue
            out.extend(model.observe(t_us, value, version))
        if model is not None:
            model_state.write(model)
        return model, out

    def _emit(self, incidents):
        for incident in incidents:
            self._counters[incident.kind].inc()
            yield incident

    @on_timer(FLUSH)
    def on_flush(self, fired=beam.DoFn.TimestampParam,
                 buffer=beam.DoFn.StateParam(BUFFER),
                 model_state=beam.DoFn.StateParam(MODEL),
                 next_flush=beam.DoFn.StateParam(NEXT),
                 silence=beam.DoFn.TimerParam(SILENCE)):
        model, out = self._release(buffer, model_state, next_flush)
        if self._silence_timer and model is not None:
            due = model.silence_due(self._lateness_s)
            if due is not None:
                silence.set(Timestamp(micros=due))
        yield from self._emit(out)

    @on_timer(SILENCE)
    def on_silence(self, fired=beam.DoFn.TimestampParam,
                   buffer=beam.DoFn.StateParam(BUFFER),
                   model_state=beam.DoFn.StateParam(MODEL),
                   next_flush=beam.DoFn.StateParam(NEXT)):
        model, out = self._release(buffer, model_state, next_flush)
        if model is not None:
            due = model.silence_due(self._lateness_s)
            if due is not None and due <= fired.micros:
                incident = model.declare_silence(
                    fired.micros - int(self._lateness_s * 1e6))
                if incident is not None:
                    out.append(incident)
                    model_state.write(model)
        yield from self._emit(out)

    @on_timer(END)
    def on_end(self, buffer=beam.DoFn.StateParam(BUFFER),
               model_state=beam.DoFn.StateParam(MODEL),
               next_flush=beam.DoFn.StateParam(NEXT)):
        model, out = self._release(buffer, model_state, next_flush)
        if model is not None:
            out.extend(model.flush_open())
            model_state.write(model)
        yield from self._emit(out)


class DetectIncidents(beam.PTransform):
    """``PCollection[CalibratedReading]`` (or ``((sensor_id, metric),
    ReadingBlock)`` pairs from the columnar path, with ``keyed``) ->
    ``PCollection[Incident]`` (global window).  ``silence_timer``: declare silences by timer (streaming); in a
    bounded run silences are found between readings only, so the end of the
    input is not a silence."""

    def __init__(self, config: DetectorConfig, lateness_s: float,
                 silence_timer: bool, job: str, keyed=False, label=None):
        super().__init__(label)
        self._fn = _IncidentFn(config, lateness_s, silence_timer, job)
        self._keyed = keyed

    def expand(self, readings):
        key = (lambda kv: kv) if self._keyed else \
            (lambda r: ((r.sensor_id, r.metric), r))
        return (readings
                | 'KeyBySensor' >> beam.Map(key).with_output_types(
                    typing.Tuple[typing.Tuple[str, str], typing.Any])
                | 'GlobalWindow' >> beam.WindowInto(
                    beam_window.GlobalWindows())
                | 'Detect' >> beam.ParDo(self._fn))
