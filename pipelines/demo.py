"""``python -m pipelines.demo kafka|pubsub [JOB]``: the real streaming path in
one command (``make demo-kafka``, ``make demo-pubsub``).

Starts a local server on a free loopback port (a Kafka-protocol broker, or
Google's Pub/Sub emulator), publishes the job's synthetic stream into it, and
runs the job reading it back, with alerts (or anomalies) published to a topic
of their own; then counts the messages in that topic and stops the server.

* kafka: the job reads ``kafka://.../JOB?stop=idle:5s`` from a 4-partition
  topic and ends once the topic is idle, so the run summary adds up as for a
  file replay.  Output: ``parquet://output/JOB-kafka``.
* pubsub: the emulator's stream never ends and the local runner's Pub/Sub
  watermark follows the clock, so the stream is published with event times
  starting now, and the job runs for ``--seconds`` (default 90) before it is
  cancelled; its counters so far are printed.  Output:
  ``parquet://output/JOB-pubsub``.
"""
import argparse
import importlib
import os
import sys
import tempfile
import time

from pipelines import JOBS, local_servers, publish


def _kafka(job, events, directory, out):
    with tempfile.TemporaryDirectory(prefix='demo-kafka-') as workdir:
        broker = local_servers.KafkaBroker(workdir)
        broker.server.start()
        try:
            broker.create_topic(job, 4)
            publish.main(['--from', f'synthetic://{job}?events={events}',
                          '--to', f'kafka://{broker.brokers}/{job}'])
            from pipelines import run  # pylint: disable=import-outside-toplevel
            run.run(importlib.import_module(JOBS[job]), [
                '--source',
                f'kafka://{broker.brokers}/{job}?group=demo&stop=idle:5s',
                '--sink', f'parquet://{directory}/{job}-kafka',
                '--alerts', f'kafka://{broker.brokers}/{job}-alerts'], out)
            out.write(f'messages in topic {job}-alerts: '
                      f'{_kafka_count(broker, f"{job}-alerts")}\n')
        finally:
            broker.server.stop()


def _kafka_count(broker, topic):
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    consumer = confluent_kafka.Consumer({'bootstrap.servers': broker.brokers,
                                         'group.id': 'demo-count'})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        return sum(consumer.get_watermark_offsets(
            confluent_kafka.TopicPartition(topic, p), timeout=10)[1]
                   for p in metadata.partitions)
    finally:
        consumer.close()


def _pubsub(job, events, seconds, directory, out):
    with tempfile.TemporaryDirectory(prefix='demo-pubsub-') as workdir:
        emulator = local_servers.PubSubEmulator(workdir)
        os.environ['PUBSUB_EMULATOR_HOST'] = emulator.host
        emulator.server.start()
        try:
            project = emulator.PROJECT
            alerts = emulator.topic(f'{job}-alerts')
            alerts_sub = emulator.subscription(alerts, f'{job}-alerts-demo')
            topic = f'projects/{project}/topics/{job}'
            publish.main(['--from', f'synthetic://{job}?events={events}'
                          f'&rate=200', '--now', '--to', f'pubsub://{topic}',
                          '--subscription', f'{job}-demo'])
            _run_for(job, seconds, out, [
                '--source', f'pubsub://projects/{project}/subscriptions/'
                            f'{job}-demo?timestamp_attribute=event_time',
                '--sink', f'parquet://{directory}/{job}-pubsub',
                '--alerts', f'pubsub://{alerts}'])
            out.write(f'messages on {alerts}: {_pull_count(alerts_sub)}\n')
        finally:
            emulator.server.stop()


def _run_for(job, seconds, out, argv):
    """Run a streaming job for a while, cancel it, print its counters."""
    from pipelines import run  # pylint: disable=import-outside-toplevel
    result, _, _ = run.start(importlib.import_module(JOBS[job]), argv, out)
    time.sleep(seconds)
    summary = run.summarize(run.counters(result, job))
    result.cancel()
    out.write(run.format_summary(job, summary, seconds) + '\n')
    out.write('(cancelled after the time given: "dropped late" here counts '
              'the records of windows still open)\n')


def _pull_count(subscription):
    from google.cloud import pubsub_v1  # pylint: disable=import-outside-toplevel
    count = 0
    with pubsub_v1.SubscriberClient() as subscriber:
        while True:
            response = subscriber.pull(subscription=subscription,
                                       max_messages=1000, timeout=5)
            if not response.received_messages:
                return count
            count += len(response.received_messages)
            subscriber.acknowledge(subscription=subscription, ack_ids=[
                m.ack_id for m in response.received_messages])


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m pipelines.demo', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('server', choices=('kafka', 'pubsub'))
    parser.add_argument('job', nargs='?', default='logs', choices=list(JOBS))
    parser.add_argument('--events', type=int, default=20000,
                        help='records of the synthetic stream '
                             '(default: %(default)s)')
    parser.add_argument('--seconds', type=float, default=90.0,
                        help='how long the pubsub demo runs the job '
                             '(default: %(default)s)')
    parser.add_argument('--output', default='output',
                        help='directory of the Parquet output '
                             '(default: %(default)s)')
    args = parser.parse_args(argv)
    try:
        if args.server == 'kafka':
            _kafka(args.job, args.events, args.output, sys.stdout)
        else:
            _pubsub(args.job, args.events, args.seconds, args.output,
                    sys.stdout)
    except local_servers.ServerError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
