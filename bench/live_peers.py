"""The peers of the live Kafka benchmark: the same core aggregation (count,
mean, min, max per key and 60 s window) from the same topic, in Bytewax and
in Quix Streams.  Runs in the benchmark-only environment (bench/.peers-venv,
made by bench/live_bench.py), never the project's: it imports neither Beam
nor the project.

    python bench/live_peers.py SYSTEM BROKERS TOPIC GROUP OUTPUT GROUPS

SYSTEM is bytewax or quixstreams; the run ends once GROUPS (key, window)
results are out.  Prints one JSON line: wall and CPU seconds from the
dataflow's start to its end (imports excluded), records read, peak MiB.
OUTPUT gets the results, one JSON list [key, window start ms, count, mean,
min, max] per line.
"""
import datetime
import json
import os
import resource
import sys
import tempfile
import time

WINDOW_S = 60
# The local broker's fetch replies exceed the client's default limit.
FETCH = {'receive.message.max.bytes': '200000000',
         'fetch.message.max.bytes': '1048576'}


def _peak_mib():
    with open('/proc/self/status', encoding='ascii') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bytewax(brokers, topic, group, groups, rows):
    """Reads the topic to its end (``tail=False``); one watermark across all
    partitions, so a wait long enough that no record is late."""
    from bytewax import operators as op  # pylint: disable=import-outside-toplevel
    from bytewax.connectors.kafka import KafkaSource  # pylint: disable=import-outside-toplevel
    from bytewax.dataflow import Dataflow  # pylint: disable=import-outside-toplevel
    from bytewax.operators import windowing as win  # pylint: disable=import-outside-toplevel
    from bytewax.testing import run_main  # pylint: disable=import-outside-toplevel
    align = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    read = [0]
    late = [0]

    def parse(message):
        read[0] += 1
        obj = json.loads(message.value)
        return obj['key'], (datetime.datetime.fromisoformat(obj['ts']),
                            obj['value'])

    def fold(acc, item):
        value = item[1]
        return (acc[0] + 1, acc[1] + value, min(acc[2], value),
                max(acc[3], value))

    def merge(a, b):
        return (a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3]))

    def emit(key_window_acc):
        key, (window_id, acc) = key_window_acc
        start_ms = int(align.timestamp() * 1000) + window_id * WINDOW_S * 1000
        rows.append([key, start_ms, acc[0], acc[1] / acc[0], acc[2], acc[3]])

    def count_late(unused):
        late[0] += 1

    flow = Dataflow('core')
    messages = op.input('kafka', flow, KafkaSource(
        [brokers], [topic], tail=False, batch_size=10000,
        add_config={'group.id': group, **FETCH}))
    keyed = op.map('parse', messages, parse)
    clock = win.EventClock(lambda item: item[0],
                           wait_for_system_duration=datetime.timedelta(
                               seconds=120))
    windower = win.TumblingWindower(
        length=datetime.timedelta(seconds=WINDOW_S), align_to=align)
    out = win.fold_window('aggregate', keyed, clock, windower,
                          lambda: (0, 0.0, float('inf'), float('-inf')),
                          fold, merge)
    op.inspect('emit', out.down, lambda unused_step, item: emit(item))
    op.inspect('late', out.late, lambda unused_step, item: count_late(item))
    run_main(flow)
    return read[0], late[0]


def quixstreams(brokers, topic, group, groups, rows):
    """An endless stream: stops once GROUPS final windows are out."""
    from quixstreams import Application  # pylint: disable=import-outside-toplevel
    from quixstreams.dataframe.windows import (Count, Max, Mean,  # pylint: disable=import-outside-toplevel
                                               Min)
    read = [0]
    app = Application(
        broker_address=brokers, consumer_group=group,
        auto_offset_reset='earliest', use_changelog_topics=False,
        state_dir=tempfile.mkdtemp(prefix='quix-state-'),
        consumer_extra_config=dict(FETCH), loglevel='WARNING')
    sdf = app.dataframe(app.topic(topic, value_deserializer='json'))

    def count(value):
        read[0] += 1
        return value

    sdf = sdf.update(count)
    sdf = sdf.tumbling_window(duration_ms=WINDOW_S * 1000).agg(
        count=Count(), mean=Mean('value'), min=Min('value'),
        max=Max('value')).final()

    def emit(value, key, unused_timestamp, unused_headers):
        rows.append([key.decode() if isinstance(key, bytes) else key,
                     value['start'], value['count'], value['mean'],
                     value['min'], value['max']])

    sdf = sdf.update(emit, metadata=True)
    app.run(sdf, count=groups, collect=False)
    return read[0], 0


def main():
    system, brokers, topic, group, output, groups = sys.argv[1:7]
    rows = []
    wall, cpu = time.perf_counter(), time.process_time()
    read, late = {'bytewax': bytewax,
                  'quixstreams': quixstreams}[system](
                      brokers, topic, group, int(groups), rows)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    with open(output, 'w', encoding='utf-8') as f:
        for row in rows:
            f.write(json.dumps(row) + '\n')
    sys.stdout.write('\n' + json.dumps({
        'read': read, 'late': late, 'cpu_s': cpu, 'wall_s': wall,
        'peak_mib': _peak_mib(), 'rows': len(rows)}) + '\n')


if __name__ == '__main__':
    os.environ.setdefault('PYTHONHASHSEED', '0')
    main()
