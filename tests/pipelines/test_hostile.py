"""Hostile input through every job: a 10 MiB line, invalid UTF-8, NUL bytes,
deeply nested JSON, NaN, 1e400, dates in the year 9999 and before 1970,
duplicate keys, empty lines, with personal data planted in them.  The job
runs to its end, every line read is accounted for, the refused ones are dead
letters with their reason, and the planted data is in no output file.

One entry of JOB_CASES per job: its module, a valid JSON line to build the
hostile ones from, and the field that holds its event time."""
import json
import pathlib
import typing

import pyarrow.dataset as ds
import pytest

from pipelines import logs, run, sensors, trades, video_qoe

IP = '203.0.113.77'
EMAIL = 'planted.person@example.org'
TOKEN = 'pl4nted-T0ken.value'
PLANTED = (IP, EMAIL, TOKEN)
PII = f'from {IP} for {EMAIL} Authorization: Bearer {TOKEN}'


class JobCase(typing.NamedTuple):
    module: typing.Any
    valid: dict            # a valid JSON record of the job
    time_field: str
    number_field: str      # a numeric field
    note_field: str = 'note'   # a text field the job accepts
    stage: str = ''            # of its dead letters (default decode.JOB)


JOB_CASES = {
    'logs': JobCase(logs, {'timestamp': '2026-01-01T00:00:05Z',
                           'service': 'auth', 'status': 200,
                           'latency_ms': 12.5, 'message': 'ok'},
                    'timestamp', 'latency_ms'),
    'trades': JobCase(trades, {'event_time': '2026-01-01T00:00:05Z',
                               'symbol': 'ACME', 'price': 101.5, 'size': 10,
                               'trade_id': 't1', 'venue': 'X'},
                      'event_time', 'price'),
    # CMCD JSON with an event_time (no ts); the personal data travels in a
    # custom key, which CMCD allows.
    'video_qoe': JobCase(video_qoe, {'event_time': '2026-01-01T00:00:05Z',
                                     'sid': 's-1', 'cid': 'movie-1',
                                     'sta': 'p', 'br': 3000, 'v': 2},
                         'event_time', 'br', 'com.example-note',
                         'decode.video'),
    'sensors': JobCase(sensors, {'event_time': '2026-01-01T00:00:05Z',
                                 'sensor_id': 'S001', 'metric': 'temperature',
                                 'value': 21.5, 'unit': 'C',
                                 'quality': 'good'},
                       'event_time', 'value'),
}


def _json(record, **changes) -> bytes:
    return json.dumps(dict(record, **changes)).encode()


def hostile_lines(case: JobCase) -> dict:
    """name -> line; each carries the planted personal data."""
    valid = dict(case.valid)
    note = case.note_field
    with_pii = _json(valid, **{note: PII})
    return {
        'ten_mib': _json(valid, **{note: PII + ' ' + 'x' * (10 << 20)}),
        'invalid_utf8': with_pii[:-2] + b'\xff\xfe' + with_pii[-2:],
        'nul_bytes': b'\x00\x00' + with_pii,
        'nul_inside': with_pii.replace(f'"{note}"'.encode(),
                                       f'"{note[:2]}\x00{note[2:]}"'.encode()),
        'deeply_nested': (b'{"a":' * 100_000) + PII.encode() +
        (b'}' * 100_000),
        'nan': with_pii.replace(
            json.dumps(valid[case.number_field]).encode(), b'NaN', 1),
        'huge_number': with_pii.replace(
            json.dumps(valid[case.number_field]).encode(), b'1e400', 1),
        'year_9999': _json(valid, **{note: PII,
                                     case.time_field: '9999-12-31T23:59:60Z'}),
        'before_1970': _json(valid, **{note: PII,
                                       case.time_field: '1969-12-31T23:59:59Z'}),
        'duplicate_keys': with_pii[:-1] + b', "'
        + case.time_field.encode() + b'": "not a time"}',
        'empty': b'',
        'blank': b'   \t',
        'pii_only': PII.encode(),
    }


def _cells(table):
    for column in table.columns:
        for value in column.to_pylist():
            if isinstance(value, (str, bytes)):
                yield value


@pytest.mark.parametrize('execution', ['columnar', 'element'])
@pytest.mark.parametrize('job', sorted(JOB_CASES))
def test_hostile_lines_are_dead_letters_and_leak_nothing(tmp_path, job,
                                                         execution):
    case = JOB_CASES[job]
    hostile = hostile_lines(case)
    good = [_json(case.valid, **{case.time_field:
                                 f'2026-01-01T00:00:{s:02d}Z'})
            for s in range(0, 60, 3)]
    lines = good[:10] + list(hostile.values()) + good[10:]
    path = tmp_path / 'hostile.jsonl'
    path.write_bytes(b'\n'.join(lines) + b'\n')
    out = tmp_path / 'out'
    summary = run.run(case.module, [
        '--source', f'file://{path}', '--sink', f'parquet://{out}',
        '--dead_letter', f'jsonl://{out}/refused', '--execution', execution,
        '--no-summary'])
    assert summary['read'] == len(lines)
    assert summary['balanced']
    assert summary['decoded'] == len(good)
    assert summary['dead_lettered'] == len(hostile)

    dead = [json.loads(line) for f in (out / 'refused').rglob('*.jsonl')
            for line in f.read_bytes().splitlines()]
    assert len(dead) == len(hostile)
    reasons = [d['reason'] for d in dead]
    assert all(d['stage'] == (case.stage or f'decode.{job}') for d in dead)
    assert sum('oversized' in r for r in reasons) == 1
    assert sum('not UTF-8' in r for r in reasons) == 1

    files = [p for p in out.rglob('*') if p.is_file()]
    assert any(p.suffix == '.parquet' for p in files)
    for file in files:
        data = file.read_bytes()
        for planted in PLANTED:
            assert planted.encode() not in data, (file, planted)
        if file.suffix == '.parquet':
            for cell in _cells(ds.dataset(str(file)).to_table()):
                text = cell.decode('utf-8', 'replace') \
                    if isinstance(cell, bytes) else cell
                assert not any(p in text for p in PLANTED), (file, text[:200])
    assert not [p for p in files if '.tmp-' in p.name]


def test_every_job_has_a_hostile_case():
    from pipelines import JOBS
    assert sorted(JOB_CASES) == sorted(JOBS)
    assert all(pathlib.Path(JOB_CASES[j].module.__file__).stem == j
               for j in JOB_CASES)
