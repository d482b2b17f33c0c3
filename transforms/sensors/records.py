"""The typed records of the sensors job."""
import typing

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp


class Reading(typing.NamedTuple):
    """One raw reading.  ``event_time`` comes from the payload, never the clock."""
    event_time: Timestamp
    sensor_id: str                  # stripped, never empty
    metric: str                     # stripped, never empty
    value: float                    # finite
    unit: str                       # '' when absent
    quality: str                    # '' when absent


beam.coders.registry.register_coder(Reading, beam.coders.RowCoder)


class CalibratedReading(typing.NamedTuple):
    """A reading after calibration ``value = a * raw + b``.  Without a
    calibration row for its sensor and metric at its event time the reading
    passes through with ``value = raw`` and ``calibrated = False``."""
    event_time: Timestamp
    sensor_id: str
    metric: str
    raw: float
    value: float
    unit: str
    quality: str
    calibrated: bool
    calibration_version: str        # the table version used ('' when none)


beam.coders.registry.register_coder(CalibratedReading, beam.coders.RowCoder)


class SensorStats(typing.NamedTuple):
    """One row of the ``stats`` table (per sensor, metric, window and pane)."""
    sensor_id: str
    metric: str
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str                # EARLY | ON_TIME | LATE
    pane_index: int                 # the highest index is the final value
    count: int
    mean: typing.Optional[float]
    min: typing.Optional[float]
    max: typing.Optional[float]
    stddev: typing.Optional[float]  # sample standard deviation (ddof=1)
    p50: typing.Optional[float]     # KLL sketch, rank error ~1.33%
    p95: typing.Optional[float]
    slope: typing.Optional[float]   # least-squares trend, units per second
    intercept: typing.Optional[float]  # the trend's value at window_start
    calibration_version: str        # the table version(s) used, ',' joined
    uncalibrated_count: int         # readings without a calibration row

    IDENTITY_FIELDS = ('sensor_id', 'metric', 'window_start', 'window_end',
                       'pane_timing', 'pane_index')


beam.coders.registry.register_coder(SensorStats, beam.coders.RowCoder)


class Incident(typing.NamedTuple):
    """One row of the ``anomalies`` table: one record per incident."""
    sensor_id: str
    metric: str
    kind: str                       # spike | stuck | silence | trend
    start: Timestamp                # first reading of the incident (silence: last before it)
    end: Timestamp                  # last reading (silence: when it was declared or ended)
    peak_value: typing.Optional[float]  # the most extreme calibrated value
    severity: float                 # spike: peak |z|; stuck: readings; silence:
                                    # seconds; trend: seconds to the limit
    reading_count: int              # readings inside the incident
    state: str                      # CLOSED | OPEN (still open when input ended)
    calibration_version: str        # of the reading that opened it

    IDENTITY_FIELDS = ('sensor_id', 'metric', 'kind', 'start')


beam.coders.registry.register_coder(Incident, beam.coders.RowCoder)
