"""Every shared Loghub sample decoded by --log_format auto, each line's event
time, level, service, host and message checked against the data set's
structured CSV (the header columns logpai's benchmark extracted).

The expected values are computed here from the CSV columns with datetime, not
with the decoders' code.  Formats without a year are decoded with the year
given below (as a user gives --syslog_year), all in UTC (--timezone UTC).
"""
import csv
import datetime

import pytest

from transforms.decode import DecodeError
from transforms.logs import decoders

UTC = datetime.timezone.utc
YEAR = 2017      # --syslog_year for the formats without a year


def _micros(moment: datetime.datetime) -> int:
    delta = moment.replace(tzinfo=UTC) - datetime.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _at(text, fmt):
    return _micros(datetime.datetime.strptime(text, fmt))


def _epoch(seconds, fraction=''):
    return int(seconds) * 1_000_000 + int((fraction + '000000')[:6])


def _level(value):
    return decoders.normalise_level(value)


# name -> (event time micros, level, service, host) of a structured CSV row.
EXPECTED = {
    'Android': lambda r: (
        _at(f"{YEAR}-{r['Date']} {r['Time']}", '%Y-%m-%d %H:%M:%S.%f'),
        _level(r['Level']), r['Component'], ''),
    'Apache': lambda r: (
        _at(r['Time'], '%a %b %d %H:%M:%S %Y'), _level(r['Level']), 'web', ''),
    'BGL': lambda r: (
        _epoch(r['Timestamp'], r['Time'].rsplit('.', 1)[1]),
        _level(r['Level']), r['Component'], r['Node']),
    'HDFS': lambda r: (
        _at(f"{r['Date']:0>6} {r['Time']:0>6}", '%y%m%d %H%M%S'),
        _level(r['Level']), r['Component'], ''),
    'HPC': lambda r: (_epoch(r['Time']), '', r['Component'], r['Node']),
    'Hadoop': lambda r: (
        _at(f"{r['Date']} {r['Time']}", '%Y-%m-%d %H:%M:%S,%f'),
        _level(r['Level']), r['Component'], ''),
    # logpai names Linux's host column "Level".
    'Linux': lambda r: (
        _at(f"{YEAR} {r['Month']} {r['Date']} {r['Time']}", '%Y %b %d %H:%M:%S'),
        '', r['Component'], r['Level']),
    # ... and OpenSSH's host column "Component" (the program is sshd).
    'OpenSSH': lambda r: (
        _at(f"{YEAR} {r['Date']} {r['Day']} {r['Time']}", '%Y %b %d %H:%M:%S'),
        '', 'sshd', r['Component']),
    'Proxifier': lambda r: (
        _at(f"{YEAR}.{r['Time']}", '%Y.%m.%d %H:%M:%S'), '', r['Program'], ''),
    'Spark': lambda r: (
        _at(f"{r['Date']} {r['Time']}", '%y/%m/%d %H:%M:%S'),
        _level(r['Level']), r['Component'], ''),
    'Windows': lambda r: (
        _at(f"{r['Date']} {r['Time']}", '%Y-%m-%d %H:%M:%S'),
        _level(r['Level']), r['Component'], ''),
    # logpai splits "[QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774]"
    # at the first ':'; the logger is the last part.
    'Zookeeper': lambda r: (
        _at(f"{r['Date']} {r['Time']}", '%Y-%m-%d %H:%M:%S,%f'),
        _level(r['Level']), r['Component'].rsplit(':', 1)[-1], ''),
}


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_loghub_sample_decoded_as_its_structured_csv(shared_dir, name):
    folder = shared_dir / 'loghub' / name
    if not folder.is_dir():
        pytest.skip(f'the Loghub sample {name} is not in ../shared/loghub')
    decode = decoders.make_decoder('auto', default_year=YEAR)
    with open(folder / f'{name}_2k.log', encoding='utf-8') as f:
        lines = f.read().splitlines()
    with open(folder / f'{name}_2k.log_structured.csv', newline='',
              encoding='utf-8') as f:
        rows = list(csv.DictReader(f))
    assert len(lines) == len(rows) == 2000
    decoded = equal = 0
    wrong = []
    for line, row in zip(lines, rows):
        try:
            record = decode(line)
        except DecodeError as e:
            wrong.append((row['LineId'], f'dead letter: {e}'))
            continue
        decoded += 1
        got = (record.event_time.micros, record.level, record.service,
               record.host, record.message.strip())
        want = EXPECTED[name](row) + (row['Content'].strip(),)
        if got == want:
            equal += 1
        else:
            wrong.append((row['LineId'], got, want))
    assert decoded >= 0.99 * len(lines), wrong[:3]
    assert equal >= 0.99 * len(lines), wrong[:3]
