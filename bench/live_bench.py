"""Live Kafka benchmark: the core aggregation (count, mean, min, max per key
and 60 s window) read from one topic on the local Kafka-protocol broker, by
this project's Kafka source on the local runner in streaming mode
(``stop=never``, the columnar path fed with a poll's records as one block)
and by the peers Bytewax and Quix Streams (bench/live_peers.py, in a
benchmark-only environment this module makes: bench/.peers-venv).

The topic holds the core benchmark's JSON lines, keyed by their key (so that
Quix Streams, which aggregates per partition, sees each key whole), with
their event times as record timestamps, in 4 partitions.  Every system reads
it from the start in a consumer group of its own; a run is measured from the
dataflow's construction to the moment every window but the last has its
final result (an endless stream closes its last window only when later
records or the clock pass it), and those results are checked against numpy
on the same lines.  Broker CPU is the broker's CPU time during the run, per
million records.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402  pylint: disable=wrong-import-position

PEERS = {'bytewax': '0.21.1', 'quixstreams': '3.28.1'}
PEERS_VENV = common.BENCH / '.peers-venv'
PARTITIONS = 4
WINDOW_MS = 60_000
KEYS = 100
JOB = 'core'
LATENCY = 'latency'


def peers_python() -> str:
    """The benchmark-only environment's Python, made (once) with the peers
    installed from the package index at their pinned versions."""
    python = PEERS_VENV / 'bin' / 'python'
    pins = [f'{name}=={version}' for name, version in PEERS.items()]
    marker = PEERS_VENV / 'pins.txt'
    if python.exists() and marker.exists() and \
            marker.read_text(encoding='utf-8').split() == pins:
        return str(python)
    subprocess.run([sys.executable, '-m', 'venv', str(PEERS_VENV)], check=True)
    subprocess.run([str(python), '-m', 'pip', 'install', '-q', *pins],
                   check=True)
    marker.write_text('\n'.join(pins) + '\n', encoding='utf-8')
    return str(python)


def _event_ms(line: bytes, field='ts') -> int:
    import datetime  # pylint: disable=import-outside-toplevel
    stamp = json.loads(line)[field]
    return int(datetime.datetime.fromisoformat(stamp).timestamp() * 1000)


def fill_topic(brokers, topic, path, key='key', time_field='ts') -> int:
    """The input file's lines, keyed by their key, with event-time record
    timestamps."""
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    from transforms.io import kafka  # pylint: disable=import-outside-toplevel
    kafka.create_topic(brokers, topic, PARTITIONS, {'retention.ms': '-1'})
    producer = confluent_kafka.Producer({
        'bootstrap.servers': brokers, 'linger.ms': 50,
        'queue.buffering.max.messages': 1_000_000})
    n = 0
    with open(path, 'rb') as f:
        for line in f:
            line = line.rstrip(b'\n')
            if not line:
                continue
            obj = json.loads(line)
            while True:
                try:
                    producer.produce(topic, value=line,
                                     key=obj[key].encode(),
                                     timestamp=_event_ms(line, time_field))
                    break
                except BufferError:
                    producer.poll(0.1)
            n += 1
            if n % 10000 == 0:
                producer.poll(0)
    assert producer.flush(120) == 0, 'records not delivered'
    return n


def expected(path):
    """numpy's count/mean/min/max per (key, window start ms), and the start
    of the last window (left out of the comparison)."""
    keys, ms, values = [], [], []
    with open(path, 'rb') as f:
        for line in f:
            obj = json.loads(line)
            keys.append(obj['key'])
            ms.append(_event_ms(line))
            values.append(obj['value'])
    ms = np.array(ms, np.int64)
    values = np.array(values)
    keys = np.array(keys)
    starts = ms - ms % WINDOW_MS
    out = {}
    for key in sorted(set(keys)):
        mask = keys == key
        for start in np.unique(starts[mask]):
            v = values[mask & (starts == start)]
            out[(str(key), int(start))] = (len(v), v.mean(), v.min(), v.max())
    return out, int(starts.max())


def check(rows, oracle, last_start):
    got = {}
    for key, start, count, mean, low, high in rows:
        if start < last_start:
            if (key, start) in got:
                raise AssertionError(f'two results for {key} {start}')
            got[(key, start)] = (count, mean, low, high)
    want = {k: v for k, v in oracle.items() if k[1] < last_start}
    assert set(got) == set(want), \
        f'{len(set(want) - set(got))} groups missing, ' \
        f'{len(set(got) - set(want))} extra'
    for k, (count, mean, low, high) in want.items():
        c, m, lo, hi = got[k]
        assert c == count, f'{k}: count {c} != {count}'
        np.testing.assert_allclose([m, lo, hi], [mean, low, high], rtol=1e-9)
    return len(want)


# ------------------------------------------------------------ this project

_ROWS = []


def _collect(stats):
    _ROWS.append([stats.key, stats.window_start.micros // 1000, stats.count,
                  stats.mean, stats.min, stats.max])


def ours(brokers, topic, group, output, groups):
    """The core aggregation on the local runner, streaming, from Kafka."""
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
    from pipelines import run as job_run  # pylint: disable=import-outside-toplevel
    from transforms import deadletter, io, keyed, windows  # pylint: disable=import-outside-toplevel
    from transforms.aggregate import AggregatePerKey  # pylint: disable=import-outside-toplevel
    from transforms.columnar import PartialsFn  # pylint: disable=import-outside-toplevel
    from transforms.decode import PayloadEventTime  # pylint: disable=import-outside-toplevel
    groups = int(groups)
    wall, cpu = time.perf_counter(), time.process_time()
    window = windows.parse_window('fixed:60s')
    trigger = windows.parse_trigger('default').for_mode(True)
    context = io.Context(JOB, streaming=True, event_time=PayloadEventTime(
        keyed.decode_keyed_value))
    source = io.open_source(f'kafka://{brokers}/{topic}?group={group}&'
                            f'start=earliest&stop=never', context)
    pipeline = beam.Pipeline(options=PipelineOptions(
        runner='BundleBasedDirectRunner', streaming=True))
    decoded = (pipeline | 'Read' >> source.stream_blocks()
               | 'DecodePartials' >> beam.ParDo(PartialsFn(
                   keyed.BlockDecoder(), keyed.KeyedPartials(window), JOB))
               .with_outputs(deadletter.DEAD, main=deadletter.OK))
    stats = (decoded.ok | 'Window' >> windows.ApplyKeptWindows(trigger)
             | 'Stats' >> AggregatePerKey(
                 keyed.KeyedMomentsFn(), keyed.to_keyed_stats,
                 keyed.moments_count, trigger.accumulates_panes, JOB))
    stats | 'Collect' >> beam.Map(_collect)
    result = pipeline.run()
    setup_cpu = time.process_time() - cpu
    last_start = int(sys.argv[-1])
    while sum(1 for r in _ROWS if r[1] < last_start) < groups:
        time.sleep(0.05)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    summary = job_run.summarize(job_run.counters(result, JOB))
    result.cancel()
    with open(output, 'w', encoding='utf-8') as f:
        for row in list(_ROWS):
            f.write(json.dumps(row) + '\n')
    return {'read': summary['read'], 'cpu_s': cpu, 'wall_s': wall, 'peak_mib': common.peak_mib(),
            'rows': len(_ROWS), 'setup_cpu_s': setup_cpu}


def logs_counts(path):
    """numpy's record count per (service, window start ms) of a logs input."""
    services, ms = [], []
    with open(path, 'rb') as f:
        for line in f:
            services.append(json.loads(line)['service'])
            ms.append(_event_ms(line, 'timestamp'))
    ms = np.array(ms, np.int64)
    starts = ms - ms % WINDOW_MS
    services = np.array(services)
    return {(str(s), int(w)): int(((services == s) & (starts == w)).sum())
            for s in np.unique(services) for w in np.unique(starts)}


class _Rows:
    """Standard output of the console sink: keeps the service_stats rows."""

    def __init__(self):
        self.rows = []

    def write(self, text):
        for line in text.splitlines():
            table, _, row = line.partition('\t')
            if table == 'service_stats':
                self.rows.append(json.loads(row))
        return len(text)

    def flush(self):
        pass


def logs_job(brokers, topic, group, output, groups):
    """The whole logs job (quantile sketches, alerts, masking, dead letters,
    early firings), streaming from Kafka; ends once ``groups`` (service,
    window) have their ON_TIME pane."""
    import datetime  # pylint: disable=import-outside-toplevel
    from pipelines import logs, run as job_run  # pylint: disable=import-outside-toplevel
    groups, last_start = int(groups), int(sys.argv[-1])
    caught, real = _Rows(), sys.stdout
    wall, cpu = time.perf_counter(), time.process_time()
    sys.stdout = caught
    result, _, _ = job_run.start(logs, [
        '--source', f'kafka://{brokers}/{topic}?group={group}&'
                    f'start=earliest&stop=never&watermark_lag=10s',
        '--sink', 'console://'], out=real)

    def start_ms(row):
        return int(datetime.datetime.fromisoformat(
            row['window_start']).timestamp() * 1000)
    while sum(1 for r in list(caught.rows) if r['pane_timing'] == 'ON_TIME'
              and start_ms(r) < last_start) < groups:
        time.sleep(0.05)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    summary = job_run.summarize(job_run.counters(result, 'logs'))
    result.cancel()
    sys.stdout = real
    with open(output, 'w', encoding='utf-8') as f:
        for r in list(caught.rows):
            if r['pane_timing'] == 'ON_TIME':
                f.write(json.dumps([r['service'], start_ms(r), r['count'],
                                    None, None, None]) + '\n')
    return {'read': summary['read'], 'cpu_s': cpu, 'wall_s': wall,
            'peak_mib': common.peak_mib(), 'rows': len(caught.rows)}


def logs_paced(brokers, topic, group, output, seconds):
    """The whole logs job on a paced, current-dated stream for ``seconds``:
    writes each service_stats row with the wall time it was written."""
    from pipelines import logs, run as job_run  # pylint: disable=import-outside-toplevel
    caught, real = _Rows(), sys.stdout
    write = caught.write

    def stamped(text):
        now = time.time()
        before = len(caught.rows)
        write(text)
        for row in caught.rows[before:]:
            row['written'] = now
        return len(text)
    caught.write = stamped
    sys.stdout = caught
    result, _, _ = job_run.start(logs, [
        '--source', f'kafka://{brokers}/{topic}?group={group}&'
                    f'start=earliest&stop=never', '--sink', 'console://'],
        out=real)
    real.write('started\n')
    real.flush()
    time.sleep(float(seconds))
    result.cancel()
    sys.stdout = real
    with open(output, 'w', encoding='utf-8') as f:
        for row in list(caught.rows):
            f.write(json.dumps(row) + '\n')
    return {'rows': len(caught.rows)}


def paced_latency(brokers, unused_pgid, rate=500, seconds=60, settle=25,
                  timeout=600):
    """p50/p99 seconds from a record's append to the broker to the written
    pane that first includes it (accumulating panes: the first whose count
    reaches the record's rank in its service and window), for the logs job
    with its default trigger on a current-dated stream at ``rate``/s."""
    import datetime  # pylint: disable=import-outside-toplevel
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    from transforms.io import kafka  # pylint: disable=import-outside-toplevel
    topic = 'paced'
    kafka.create_topic(brokers, topic, PARTITIONS)
    output = common.OUT / 'live-paced.jsonl'
    child = subprocess.Popen(
        [sys.executable, __file__, '--child', 'paced', brokers, topic,
         f'bench-paced-{time.time_ns()}', str(output),
         str(seconds + settle + 3)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(common.BENCH.parent)))
    child.stdout.readline()              # the job has started
    time.sleep(3)                        # and its reads with it
    producer = confluent_kafka.Producer({'bootstrap.servers': brokers,
                                         'linger.ms': 5})
    appended = {}                        # (service, window ms) -> [times]
    services = common.SERVICES[:5]
    start = time.time()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        now = time.time()
        ms = int(now * 1000)
        service = services[i % len(services)]
        stamp = datetime.datetime.fromtimestamp(
            now, datetime.timezone.utc).isoformat(
                timespec='milliseconds').replace('+00:00', 'Z')
        producer.produce(topic, value=json.dumps({
            'timestamp': stamp, 'service': service, 'level': 'INFO',
            'status': 200, 'latency_ms': 12.5}).encode(), timestamp=ms)
        producer.poll(0)
        appended.setdefault((service, ms - ms % WINDOW_MS), []).append(now)
    producer.flush(30)
    out, err = child.communicate(timeout=timeout)
    if child.returncode != 0:
        raise RuntimeError(f'paced logs job failed:\n{err[-3000:]}')
    panes = {}
    with open(output, encoding='utf-8') as f:
        for line in f:
            row = json.loads(line)
            key = (row['service'], int(datetime.datetime.fromisoformat(
                row['window_start']).timestamp() * 1000))
            panes.setdefault(key, []).append((row['written'], row['count']))
    latencies = []
    for key, times in appended.items():
        written = sorted(panes.get(key, ()))
        for rank, appended_at in enumerate(sorted(times), 1):
            first = next((w for w, count in written if count >= rank), None)
            if first is not None:
                latencies.append(first - appended_at)
    total = sum(len(t) for t in appended.values())
    latencies = np.array(latencies)
    return {'rate': rate, 'records': total, 'measured': len(latencies),
            'p50_s': float(np.percentile(latencies, 50)),
            'p99_s': float(np.percentile(latencies, 99))}


def check_counts(rows, oracle, last_start):
    got = {(k, s): c for k, s, c, *_ in rows if s < last_start}
    want = {k: v for k, v in oracle.items() if k[1] < last_start and v}
    assert got == want, f'{len(set(want) ^ set(got))} groups differ or ' \
        f'{sum(got.get(k) != v for k, v in want.items())} counts'
    return len(want)


# ------------------------------------------------------------ orchestration

def _cpu_of_group(pgid) -> float:
    """CPU seconds of every process in a process group (the broker)."""
    ticks = os.sysconf('SC_CLK_TCK')
    total = 0
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat', encoding='ascii') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:          # field 5: process group
            total += sum(int(x) for x in fields[11:15])
    return total / ticks


def _run(cmd, broker_pgid, timeout):
    before = _cpu_of_group(broker_pgid)
    env = dict(os.environ, PYTHONPATH=str(common.BENCH.parent))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)
    broker_cpu = _cpu_of_group(broker_pgid) - before
    if done.returncode != 0:
        raise RuntimeError(f'{" ".join(map(str, cmd[1:3]))} failed:\n'
                           f'{done.stderr[-3000:]}')
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out['broker_cpu_s'] = broker_cpu
    return out


def run_all(events, timeout=600, parts=('live', 'latency')):
    """The live rows: {system: measurements}, for ``events`` records;
    ``parts``: 'live' (the core aggregation against the peers, the whole
    logs job beside it) and 'latency' (the paced end-to-end latency)."""
    from pipelines.local_servers import KafkaBroker  # pylint: disable=import-outside-toplevel
    workdir = common.OUT / 'live-broker'
    shutil.rmtree(workdir, ignore_errors=True)      # a topic of its own
    broker = KafkaBroker(workdir)
    broker.server.start()
    rows = {}
    try:
        pgid = os.getpgid(broker.server.process.pid)
        if 'live' in parts:
            rows.update(_throughput(broker, pgid, events, timeout))
        if 'latency' in parts:
            print('  live Kafka: latency of the logs job at a paced rate ...',
                  flush=True)
            rows[LATENCY] = paced_latency(broker.brokers, pgid)
    finally:
        broker.server.stop()
    return rows


def _throughput(broker, pgid, events, timeout):
    """The core aggregation by this project and the peers, and the whole
    logs job, each from the start of a topic of ``events`` records."""
    from bench import core_bench  # pylint: disable=import-outside-toplevel
    python = peers_python()
    path = core_bench.make_input(events)
    oracle, last_start = expected(path)
    groups = sum(1 for k in oracle if k[1] < last_start)
    rows = {}
    topic = f'core-{events}'
    n = fill_topic(broker.brokers, topic, path)
    runs = [
        ('this project (local runner, stop=never)',
         [sys.executable, __file__, '--child', 'ours']),
        (f'Bytewax {PEERS["bytewax"]} (read to the end)',
         [python, str(common.BENCH / 'live_peers.py'), 'bytewax']),
        (f'Quix Streams {PEERS["quixstreams"]} (endless)',
         [python, str(common.BENCH / 'live_peers.py'), 'quixstreams']),
    ]
    for i, (name, cmd) in enumerate(runs):
        print(f'  live Kafka: {name} ...', flush=True)
        output = common.OUT / f'live-{i}.jsonl'
        measured = _run(cmd + [broker.brokers, topic,
                               f'bench-{i}-{time.time_ns()}',
                               str(output), str(groups), str(last_start)],
                        pgid, timeout)
        with open(output, encoding='utf-8') as f:
            found = [json.loads(line) for line in f]
        measured['groups'] = check(found, oracle, last_start)
        measured['events'] = n
        rows[name] = measured
    # The whole logs job beside it, on the logs benchmark's lines.
    logs_path = common.logs_input(events)
    counts = logs_counts(logs_path)
    logs_last = max(w for _, w in counts)
    logs_groups = sum(1 for (_, w), c in counts.items()
                      if w < logs_last and c)
    n = fill_topic(broker.brokers, f'logs-{events}', logs_path,
                   'service', 'timestamp')
    name = 'logs job, whole (local runner, stop=never, early firings)'
    print(f'  live Kafka: {name} ...', flush=True)
    output = common.OUT / 'live-logs.jsonl'
    measured = _run([sys.executable, __file__, '--child', 'logs',
                     broker.brokers, f'logs-{events}',
                     f'bench-logs-{time.time_ns()}', str(output),
                     str(logs_groups), str(logs_last)], pgid, timeout)
    with open(output, encoding='utf-8') as f:
        found = [json.loads(line) for line in f]
    measured['groups'] = check_counts(found, counts, logs_last)
    measured['events'] = n
    rows[name] = measured
    return rows


def table(rows):
    """Markdown lines of the live rows (those measured), and the min ratio
    to the peers (None without them)."""
    rows = dict(rows)
    latency = rows.pop(LATENCY, None)
    lines, ratios = [], []
    ours = next((v for k, v in rows.items()
                 if k.startswith('this project')), None)
    if ours:
        rate = ours['events'] / ours['cpu_s']
        lines += ['| live Kafka, core aggregation | events | ev/s/core | '
                  'ratio of ours to it | wall s | peak MiB | broker CPU s per '
                  '1M records | agreement |', '|---|---|---|---|---|---|---|---|']
        for name, r in rows.items():
            r_rate = r['events'] / r['cpu_s']
            ratio = rate / r_rate
            peer = not name.startswith(('this project', 'logs job'))
            if peer:
                ratios.append(ratio)
            lines.append(
                f'| {name} | {r["events"]:,} | {r_rate:,.0f} | '
                f'{f"{ratio:.2f}" if peer else "-"} | {r["wall_s"]:.1f} | '
                f'{r["peak_mib"]:.0f} | '
                f'{r["broker_cpu_s"] * 1e6 / r["events"]:.1f} | '
                f'{r["groups"]} groups agree with numpy'
                f'{" (counts)" if name.startswith("logs job") else ""} |')
    if latency:
        lines += ([''] if lines else []) + [
            f'End to end (the logs job, its default trigger with '
            f'early firings every 10 s, a current-dated stream paced at '
            f'{latency["rate"]} records/s, {latency["records"]:,} '
            f'records): from a record\'s append to the broker to the '
            f'written pane that first includes it, p50 '
            f'{latency["p50_s"]:.1f} s, p99 {latency["p99_s"]:.1f} s.']
    return lines, min(ratios, default=None)


if __name__ == '__main__' and len(sys.argv) > 2 and sys.argv[1] == '--child':
    # Through the module's own name: Beam pickles what __main__ defines by
    # value, and the collected rows must land in this module's list.
    from bench import live_bench  # pylint: disable=import-self
    result = {'ours': live_bench.ours, 'logs': live_bench.logs_job,
              'paced': live_bench.logs_paced}[
        sys.argv[2]](*sys.argv[3:8])
    sys.stdout.write('\n' + json.dumps(result) + '\n')
