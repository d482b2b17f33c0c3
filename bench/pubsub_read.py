"""Pub/Sub read throughput on the local runner: the logs job reading a
subscription of the local Pub/Sub emulator until it has read every message.

``python bench/pubsub_read.py [--events N]`` publishes N synthetic log
records (dated now) to a fresh topic and subscription of an emulator it
starts, runs ``python -m pipelines logs`` in streaming mode in this process
(sink: JSON lines in a temporary folder) and prints the messages read per
second and per CPU-second of this process (the emulator's own CPU is not
counted), from the job's start to its ``read`` counter reaching N.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines import logs  # noqa: E402  pylint: disable=wrong-import-position
from pipelines import run as job_run  # noqa: E402  pylint: disable=wrong-import-position
from pipelines.local_servers import PubSubEmulator  # noqa: E402  pylint: disable=wrong-import-position
from pipelines.publish import main as publish_main  # noqa: E402  pylint: disable=wrong-import-position


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--events', type=int, default=5000,
                        help='messages to publish and read (default 5000)')
    parser.add_argument('--timeout', type=float, default=300,
                        help='seconds to wait for the read (default 300)')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        emulator = PubSubEmulator(work)
        os.environ['PUBSUB_EMULATOR_HOST'] = emulator.host
        emulator.server.start()
        try:
            project = PubSubEmulator.PROJECT
            topic = f'projects/{project}/topics/bench'
            publish_main(['--from', f'synthetic://logs?events={args.events}'
                          f'&seed=5', '--now', '--to', f'pubsub://{topic}',
                          '--subscription', 'bench-in'])
            cpu, wall = time.process_time(), time.monotonic()
            result, _, _ = job_run.start(logs, [
                '--source', f'pubsub://projects/{project}/subscriptions/'
                            f'bench-in?timestamp_attribute=event_time',
                '--sink', f'jsonl://{work}/out', '--no-summary'])
            read = 0
            try:
                while time.monotonic() - wall < args.timeout:
                    read = job_run.counters(result, 'logs').get('read', 0)
                    if read >= args.events:
                        break
                    time.sleep(0.05)
                cpu, wall = time.process_time() - cpu, \
                    time.monotonic() - wall
            finally:
                result.cancel()
        finally:
            emulator.server.stop()
    print(f'pubsub read: {read} of {args.events} messages in {wall:.1f} s, '
          f'{cpu:.1f} CPU-s: {read / wall:.0f} messages/s, '
          f'{read / cpu:.0f} messages/CPU-s')


if __name__ == '__main__':
    main()
