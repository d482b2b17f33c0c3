"""A synthetic sensor stream: one JSON reading per line, as a plant or IoT
gateway would deliver it.

What it contains (deterministic for a seed):

* ``sensors`` sensors (``S000``, ``S001``, ...), even ones measuring
  ``temperature`` (C), odd ones ``pressure`` (kPa), each reading every
  ``interval`` seconds of event time (with a little jitter);
* a daily cycle, Gaussian noise and a slow drift per sensor;
* *spikes*: with chance ``spikes`` per reading, a burst of 3 readings 12
  noise standard deviations off;
* a *stuck* sensor (``S001``): the same value repeated for 60 readings from
  reading 400 on;
* a *silent* sensor (``S002``): no readings for 30 minutes from reading 500;
* *duplicates*: a ``duplicates`` fraction of readings re-sent unchanged;
* out-of-order arrival (up to ``disorder`` seconds), a ``late`` fraction of
  stragglers delayed 20 s to 6 min, and a ``malformed`` fraction of broken
  records (truncated JSON, bad UTF-8, value as text, missing sensor_id,
  value not finite, empty line).

``events`` counts every record of the stream, malformed ones and duplicates
included.
"""
import datetime
import math
import random

import orjson

from transforms.synthetic import SyntheticStream, Ticks, parse_start, \
    stream_ticks
from transforms.synthetic.trades import Number

PARAMS = {
    'events': (int, 24000, 'number of records (malformed ones included)'),
    'sensors': (int, 20, 'number of sensors (1..1000)'),
    'seed': (int, 42, 'random seed: the same seed gives the same stream'),
    'interval': (float, 10.0, 'seconds of event time between two readings '
                              'of a sensor'),
    'start': (str, '2026-01-01T00:00:00Z', 'event time of the first reading'),
    'spikes': (Number(0, 1, 'fraction'), 0.002,
               'chance per reading that a 3-reading spike starts'),
    'duplicates': (Number(0, 1, 'fraction'), 0.005,
                   'fraction of readings re-sent unchanged'),
    'disorder': (float, 5.0, 'max out-of-order delay of on-time records, s'),
    'late': (float, 0.01, 'fraction of stragglers delayed 20 s to 6 min'),
    'malformed': (float, 0.005, 'fraction of malformed records'),
    'tick': (float, 30.0, 'seconds of processing time per source step'),
}

STUCK_SENSOR, STUCK_FROM, STUCK_READINGS = 1, 400, 60
SILENT_SENSOR, SILENT_FROM, SILENT_S = 2, 500, 1800.0
SPIKE_SIGMAS, SPIKE_READINGS = 12.0, 3


def _rfc3339_ms(epoch_ms: int) -> str:
    seconds, ms = divmod(epoch_ms, 1000)
    dt = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return f'{dt:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z'


def _malformed(rng, doc: dict) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return orjson.dumps(doc)[:-7]
    if kind == 1:
        return b'\xff\xfe' + orjson.dumps(doc)
    if kind == 2:
        return orjson.dumps(dict(doc, value=str(doc['value'])))
    if kind == 3:
        return orjson.dumps({k: v for k, v in doc.items() if k != 'sensor_id'})
    if kind == 4:
        return orjson.dumps(doc).replace(
            str(doc['value']).encode(), b'1e999', 1)
    return b''


def _readings(params, rng):
    """Endless (event seconds, doc, round start) round-robin: every reading
    of a round (and of the rounds after it) is at or after its start."""
    n = params['sensors']
    start = parse_start(params['start'])
    interval = params['interval']
    profile = []
    for i in range(n):
        temperature = i % 2 == 0
        profile.append({
            'metric': 'temperature' if temperature else 'pressure',
            'unit': 'C' if temperature else 'kPa',
            'base': rng.uniform(18, 24) if temperature else rng.uniform(95, 105),
            'amp': rng.uniform(2, 5) if temperature else rng.uniform(0.5, 2),
            'noise': 0.2 if temperature else 0.1,
            'drift': rng.uniform(-1, 1) / 86400.0,     # units per second
            'phase': rng.uniform(0, 2 * math.pi),
            'spike_left': 0, 'spike_sign': 1.0, 'stuck': None,
        })
    k = 0
    while True:
        floor = start + k * interval
        for i, p in enumerate(profile):
            t = start + k * interval + rng.uniform(0, interval * 0.2)
            if i == SILENT_SENSOR and SILENT_FROM <= k and \
                    (k - SILENT_FROM) * interval < SILENT_S:
                continue
            value = (p['base'] + p['drift'] * (t - start)
                     + p['amp'] * math.sin(2 * math.pi * (t % 86400) / 86400
                                           + p['phase'])
                     + rng.gauss(0, p['noise']))
            if p['spike_left'] == 0 and rng.random() < params['spikes']:
                p['spike_left'] = SPIKE_READINGS
                p['spike_sign'] = rng.choice((-1.0, 1.0))
            if p['spike_left']:
                value += p['spike_sign'] * SPIKE_SIGMAS * p['noise'] * \
                    max(p['amp'], 1.0)
                p['spike_left'] -= 1
            if i == STUCK_SENSOR and STUCK_FROM <= k < STUCK_FROM + \
                    STUCK_READINGS:
                if p['stuck'] is None:
                    p['stuck'] = round(value, 3)
                value = p['stuck']
            yield t, {'event_time': _rfc3339_ms(round(t * 1000)),
                      'sensor_id': f'S{i:03d}', 'metric': p['metric'],
                      'value': round(value, 3), 'unit': p['unit'],
                      'quality': 'good'}, floor
        k += 1


def generate(params: dict) -> SyntheticStream:
    """The stream for ``params`` (see PARAMS; absent ones take defaults)."""
    values = {name: default for name, (_, default, _) in PARAMS.items()}
    values.update(params)
    params = values
    if not 1 <= params['sensors'] <= 1000:
        raise ValueError('sensors must be in 1..1000')
    if params['interval'] <= 0:
        raise ValueError('interval must be greater than zero')
    return SyntheticStream(
        Ticks(lambda: stream_ticks(_records(params), params['tick'],
                                   params['disorder'],
                                   parse_start(params['start']))),
        params['tick'])


def _records(params: dict):
    """(event time, arrival, payload, later): ``later`` (the start of the
    reading's round) bounds the arrival of every record still to come."""
    rng = random.Random(params['seed'])
    disorder = params['disorder']
    count = 0
    for t, doc, floor in _readings(params, rng):
        if count >= params['events']:
            break
        if rng.random() < params['malformed']:
            payload = _malformed(rng, doc)
        else:
            payload = orjson.dumps(doc)
        if rng.random() < params['late']:
            arrival = t + rng.uniform(20.0, 360.0)
        else:
            arrival = t + rng.uniform(0.0, disorder)
        count += 1
        yield t, arrival, payload, floor
        if count < params['events'] and \
                rng.random() < params['duplicates']:
            count += 1
            yield t, arrival + rng.uniform(0.0, 10.0), payload, floor
