"""The synthetic sensor stream: deterministic, and holding what it promises
(cycles and noise, a stuck sensor, a silent one, spikes, duplicates, late and
malformed readings)."""
import orjson
import pytest

from transforms.io import UriError, parse_uri
from transforms.io import synthetic as synthetic_io
from transforms.synthetic import sensors

PARAMS = {'events': 6000, 'sensors': 5, 'seed': 3}


def docs(stream):
    out = []
    for t, payload in stream.records():
        try:
            out.append((t, orjson.loads(payload)))
        except orjson.JSONDecodeError:
            out.append((t, None))
    return out


def test_the_same_seed_gives_the_same_stream():
    a, b = sensors.generate(PARAMS), sensors.generate(PARAMS)
    assert list(a.payloads()) == list(b.payloads()) and len(a) == 6000
    assert list(sensors.generate(dict(PARAMS, seed=4)).payloads()) != \
        list(a.payloads())


def test_the_stream_holds_its_incidents():
    records = docs(sensors.generate(PARAMS))
    good = [d for _, d in records if isinstance(d, dict) and
            isinstance(d.get('value'), float) and 'sensor_id' in d]
    stuck = [d['value'] for d in good if d['sensor_id'] == 'S001']
    runs, run = [], 1
    for x, y in zip(stuck, stuck[1:]):
        run = run + 1 if x == y else 1
        runs.append(run)
    assert max(runs) >= sensors.STUCK_READINGS - 5   # duplicates aside
    silent = sorted(t for t, d in records if d and d.get('sensor_id') == 'S002')
    gaps = [b - a for a, b in zip(silent, silent[1:])]
    assert max(gaps) >= sensors.SILENT_S
    assert sum(d is None for _, d in records) > 0        # malformed
    payloads = list(sensors.generate(PARAMS).payloads())
    assert len(set(payloads)) < len(payloads)             # duplicates


def test_bad_parameters_are_refused_by_name():
    with pytest.raises(UriError, match='sensors'):
        synthetic_io.params_of(parse_uri('synthetic://sensors?sensor=3'))
    with pytest.raises(ValueError, match='sensors must be'):
        sensors.generate({'sensors': 0})
