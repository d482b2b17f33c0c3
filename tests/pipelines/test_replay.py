"""Dead letters replayed after a fix: ``--source deadletters://DIR`` feeds the
raw payloads a job refused back through it; what is still refused is counted
and dead-lettered again."""
import datetime

import pandas as pd
import pyarrow.dataset as ds
import pytest

from pipelines import logs, run, trades

BASE = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
SERVICES = ('auth', 'search', 'payments')
GARBAGE = [b'{"timestamp": "2026-01-01T00:00:01Z", "service": ',
           b'\xff\xfe not text', b'[1, 2, 3]']


def _log_lines(n=240):
    """JSON lines and, every third line, an access-log line; with the event
    time and service of each, for the oracle."""
    lines, truth = [], []
    for i in range(n):
        t = BASE + datetime.timedelta(seconds=1.5 * i)
        service = SERVICES[i % len(SERVICES)]
        if i % 3 == 1:
            lines.append(
                f'{service}:443 192.0.2.{i % 250} - - '
                f'[{t:%d/%b/%Y:%H:%M:%S} +0000] "GET /x?u=bob@example.com '
                f'HTTP/1.1" 200 12 "-" "curl/8" 0.010'.encode())
        else:
            lines.append(
                f'{{"timestamp":"{t:%Y-%m-%dT%H:%M:%S.%f}Z","service":'
                f'"{service}","status":200,"latency_ms":{i % 17}}}'.encode())
        truth.append((service, t))
    return lines, truth


def _table(path):
    if not path.exists():
        return pd.DataFrame()
    return ds.dataset(str(path), format='parquet').to_table().to_pandas()


def test_fixed_and_replayed_every_record_ends_in_its_window(tmp_path):
    lines, truth = _log_lines()
    path = tmp_path / 'mixed.log'
    path.write_bytes(b'\n'.join(lines + GARBAGE) + b'\n')
    first, replay = tmp_path / 'first', tmp_path / 'replay'
    # The mistake: the file is read as JSON only, so the access-log lines
    # are refused.
    s1 = run.run(logs, ['--source', f'file://{path}', '--log_format', 'json',
                        '--sink', f'parquet://{first}', '--no-summary'])
    access = sum(1 for line in lines if not line.startswith(b'{'))
    assert s1['dead_lettered'] == access + len(GARBAGE)
    assert s1['balanced']
    # The fix, and the replay of what was refused.
    s2 = run.run(logs, ['--source', f'deadletters://{first}',
                        '--log_format', 'auto',
                        '--sink', f'parquet://{replay}', '--no-summary'])
    assert s2['read'] == s1['dead_lettered']
    assert s2['decoded'] == access
    assert s2['dead_lettered'] == len(GARBAGE)       # still refused
    assert s2['balanced']
    still = _table(replay / 'dead_letter')
    assert sorted(still.raw) == sorted(GARBAGE)

    # Every record of the file is now counted in its window: first run plus
    # replay equals an independent count per (service, minute).
    frame = pd.DataFrame(truth, columns=['service', 'time'])
    frame['window_start'] = frame.time.dt.floor('60s')
    expected = frame.groupby(['service', 'window_start']).size()
    got = pd.concat([_table(first / 'service_stats'),
                     _table(replay / 'service_stats')])
    got['window_start'] = pd.to_datetime(got.window_start, utc=True)
    counted = got.groupby(['service', 'window_start'])['count'].sum()
    expected.index = expected.index.set_levels(
        pd.to_datetime(expected.index.levels[1], utc=True), level=1)
    pd.testing.assert_series_equal(
        counted.sort_index(), expected.sort_index().rename('count'),
        check_dtype=False, check_index_type=False)


def test_a_trades_replay_reads_jsonl_dead_letters_and_skips_other_stages(
        tmp_path):
    # Trades written as CSV (with its header) but read as JSON: every row is
    # refused; replayed as auto they are all bars again.
    header = b'event_time,symbol,price,size,trade_id,venue,conditions'
    rows = [f'2026-01-01T00:0{i // 20}:{i % 20:02d}Z,ACME,{100 + i % 5},'
            f'{1 + i % 3},t{i},X,'.encode() for i in range(60)]
    path = tmp_path / 'trades.csv'
    path.write_bytes(b'\n'.join([header] + rows) + b'\n')
    first, replay = tmp_path / 'first', tmp_path / 'replay'
    s1 = run.run(trades, ['--source', f'file://{path}', '--trade_format',
                          'json', '--sink', f'jsonl://{first}',
                          '--no-summary'])
    assert s1['dead_lettered'] == len(rows) + 1
    # A dead letter of another stage (a row a sink refused) is not input:
    # it is passed over, not replayed.
    other = first / 'dead_letter' / 'unwindowed' / 'dead_letter-x.jsonl'
    other.write_bytes(b'{"raw":"{\\"symbol\\":\\"ACME\\"}","stage":'
                      b'"sink.bigquery","reason":"refused","error_time":'
                      b'"2026-01-01T00:00:00Z","source":""}\n')
    s2 = run.run(trades, ['--source', f'deadletters://{first}',
                          '--trade_format', 'auto', '--sink',
                          f'parquet://{replay}', '--no-summary'])
    assert s2['read'] == len(rows) + 1
    assert s2['decoded'] == len(rows)
    assert s2['filters'] == {'csv_header': 1}
    assert s2['dead_lettered'] == 0 and s2['balanced']
    bars = _table(replay / 'bars')
    assert bars.groupby('window_start')['trade_count'].sum().tolist() == \
        [20, 20, 20]


@pytest.mark.parametrize('uri, expected', [
    ('deadletters://{tmp}/none', 'no dead-letter files'),
    ('deadletters://{tmp}?stage=', 'stage= names no stage prefix'),
    ('deadletters://{tmp}?stages=decode', 'unknown parameter(s) stages'),
])
def test_a_replay_of_nothing_is_refused_in_one_line(tmp_path, uri, expected,
                                                    capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.run(logs, ['--source', uri.format(tmp=tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err, err
