"""``python -m pipelines.publish --from URI --to URI``: put a stream into a
Kafka topic or a Pub/Sub topic, for a job to read from there.

``--from`` is a ``synthetic://DOMAIN?...`` stream (each record is published
with its event time: the Kafka record timestamp, or the Pub/Sub attribute
``event_time``, RFC 3339) or a ``file://GLOB`` replay (one message per line).
``--to`` is ``kafka://BROKERS/TOPIC`` (the topic is created with
``--partitions`` partitions and any ``--topic_config`` if it does not exist:
Kafka deletes records older than the topic's retention by their timestamps,
so a replay dated in the past needs ``--topic_config retention.ms=-1``) or
``pubsub://projects/P/topics/T`` (the topic, and the ``--subscription`` if
given, are created if they do not exist: Pub/Sub keeps messages only for
subscriptions that exist when they are published).

Messages go in the stream's arrival order; ``--pace`` sleeps one tick of the
stream between ticks, so that the stream arrives as it would live.  Prints the
number of messages published.
"""
import argparse
import datetime
import sys
import time

from transforms import io
from transforms.io import _messages
from transforms.io import synthetic


def _records(text, now):
    """(event_time_seconds or None, payload) pairs, tick by tick."""
    uri = io.check_uri(text, 'source')
    if uri.scheme == 'synthetic':
        if now and 'start' not in uri.params:
            start = datetime.datetime.now(datetime.timezone.utc).replace(
                microsecond=0).isoformat().replace('+00:00', 'Z')
            uri = uri._replace(params=dict(uri.params, start=start))
        stream = synthetic.generate(uri)
        for records, _ in stream.ticks:
            yield stream.tick_seconds, records
        return
    if uri.scheme == 'file':
        from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
        for metadata in FileSystems.match([uri.location])[0].metadata_list:
            with FileSystems.open(metadata.path) as f:
                lines = [line.rstrip(b'\r\n') for line in f]
            yield 0.0, [(None, line) for line in lines if line]
        return
    raise io.UriError(f'{text}: --from takes synthetic:// or file://')


class KafkaTarget:
    def __init__(self, uri, partitions, topic_config=None):
        from transforms.io import kafka  # pylint: disable=import-outside-toplevel
        brokers, self.topic = kafka._split_location(uri)  # pylint: disable=protected-access
        config = kafka._config(uri)  # pylint: disable=protected-access
        kafka.create_topic(brokers, self.topic, partitions, topic_config,
                           config)
        self.publisher = kafka.Publisher(brokers, config)

    def publish(self, event_time, payload):
        self.publisher.send(self.topic, payload, timestamp_ms=None
                            if event_time is None else int(event_time * 1000))

    def flush(self):
        self.publisher.flush()


class PubSubTarget:
    def __init__(self, uri, subscription):
        from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
        from google.cloud import pubsub_v1  # pylint: disable=import-outside-toplevel
        self.topic = uri.location.strip('/')
        self.publisher = pubsub_v1.PublisherClient()
        try:
            self.publisher.create_topic(name=self.topic)
        except exceptions.AlreadyExists:
            pass
        if subscription:
            project = self.topic.split('/')[1]
            name = subscription if subscription.startswith('projects/') \
                else f'projects/{project}/subscriptions/{subscription}'
            subscriber = pubsub_v1.SubscriberClient()
            try:
                subscriber.create_subscription(name=name, topic=self.topic,
                                               ack_deadline_seconds=60)
            except exceptions.AlreadyExists:
                pass
            subscriber.close()
        self.futures = []

    def publish(self, event_time, payload):
        attributes = {} if event_time is None else {
            'event_time': _messages.rfc3339(int(event_time * 1000))}
        self.futures.append(
            self.publisher.publish(self.topic, payload, **attributes))
        if len(self.futures) >= 1000:
            self.flush()

    def flush(self):
        for future in self.futures:
            future.result(60)
        self.futures = []


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m pipelines.publish', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--from', dest='source', required=True,
                        help='synthetic://DOMAIN?... or file://GLOB')
    parser.add_argument('--to', dest='target', required=True,
                        help='kafka://BROKERS/TOPIC or '
                             'pubsub://projects/P/topics/T')
    parser.add_argument('--partitions', type=int, default=4,
                        help='partitions of a Kafka topic this creates '
                             '(default: %(default)s)')
    parser.add_argument('--topic_config', action='append', default=[],
                        metavar='NAME=VALUE',
                        help='configuration of a Kafka topic this creates, '
                             'e.g. retention.ms=-1 to keep a replay dated in '
                             'the past (repeatable)')
    parser.add_argument('--subscription', default=None,
                        help='Pub/Sub subscription to create on the topic '
                             'before publishing (name or full path)')
    parser.add_argument('--now', action='store_true',
                        help='a synthetic stream without start= starts now '
                             '(for sources whose watermark follows the clock)')
    parser.add_argument('--pace', action='store_true',
                        help='sleep one tick of the stream between ticks')
    args = parser.parse_args(argv)
    try:
        target_uri = io.check_uri(args.target, 'sink')
        if target_uri.scheme == 'kafka':
            config = dict(item.split('=', 1) for item in args.topic_config
                          if '=' in item)
            if len(config) != len(args.topic_config):
                raise ValueError('--topic_config takes NAME=VALUE')
            target = KafkaTarget(target_uri, args.partitions, config)
        elif target_uri.scheme == 'pubsub':
            target = PubSubTarget(target_uri, args.subscription)
        else:
            raise io.UriError(f'{args.target}: --to takes kafka:// or '
                              f'pubsub://')
        count = 0
        for tick_seconds, records in _records(args.source, args.now):
            for event_time, payload in records:
                target.publish(event_time, payload)
                count += 1
            if args.pace and tick_seconds:
                target.flush()
                time.sleep(tick_seconds)
        target.flush()
    except (ValueError, RuntimeError) as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    sys.stdout.write(f'published {count} messages to {args.target}\n')
    return count


if __name__ == '__main__':
    main()
