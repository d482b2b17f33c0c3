"""Fixtures starting the real servers the integration tests talk to."""
import os

import pytest

from tests.integration import servers


def _kafka_answers(port):
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({'bootstrap.servers': f'127.0.0.1:{port}'})
    # The port opens before the data is loaded: wait for broker metadata.
    return bool(admin.list_topics(timeout=2).brokers)


def _noida_binary():
    """The broker binary itself: the ``noida-db`` command is a wrapper whose
    TERM leaves the binary running, so the tests start (and stop) the binary."""
    try:
        import noida_db
    except ImportError:
        return None
    return os.path.join(os.path.dirname(noida_db.__file__), 'noida-db')


class KafkaBroker:
    """A Kafka-protocol broker (noida-db) on a loopback port."""

    def __init__(self, workdir):
        program = servers.require(
            _noida_binary(), 'the Kafka-protocol broker noida-db',
            'install requirements-dev.txt (make install)')
        self.port = servers.free_port()
        self.brokers = f'127.0.0.1:{self.port}'
        self.server = servers.Server(
            'kafka', [program, 'start', '--only', 'kafka', '--kafka-port',
                      self.port, '--data-dir', os.path.join(workdir, 'data')],
            lambda: _kafka_answers(self.port), workdir)

    def admin(self):
        from confluent_kafka.admin import AdminClient
        return AdminClient({'bootstrap.servers': self.brokers})

    def create_topic(self, topic, partitions):
        """A topic that keeps its records whatever their timestamps (the
        synthetic streams are dated in the past; the broker applies the
        default 7-day retention at once)."""
        from confluent_kafka.admin import NewTopic
        admin = self.admin()      # kept until the future is done
        future = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1,
                      config={'retention.ms': '-1'})])[topic]
        future.result(30)


@pytest.fixture(scope='session')
def kafka(tmp_path_factory):
    broker = KafkaBroker(tmp_path_factory.mktemp('kafka'))
    broker.server.start()
    yield broker
    broker.server.stop()


PUBSUB_EMULATOR_PATHS = (
    '/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/'
    'cloud-pubsub-emulator',
    '/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/'
    'cloud-pubsub-emulator',
    '/opt/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator',
)


def _pubsub_emulator():
    """Google's Pub/Sub emulator (Debian package
    google-cloud-cli-pubsub-emulator), or PUBSUB_EMULATOR_BIN."""
    candidates = [os.environ.get('PUBSUB_EMULATOR_BIN')]
    candidates += list(PUBSUB_EMULATOR_PATHS)
    return next((c for c in candidates if c and os.path.exists(c)), None)


class PubSubEmulator:
    PROJECT = 'rtp-test'

    def __init__(self, workdir):
        program = servers.require(
            _pubsub_emulator(), "Google's Pub/Sub emulator",
            'install the Debian package google-cloud-cli-pubsub-emulator '
            '(with a Java runtime) or set PUBSUB_EMULATOR_BIN')
        self.port = servers.free_port()
        self.host = f'127.0.0.1:{self.port}'
        self.server = servers.Server(
            'pubsub', [program, '--host=127.0.0.1', f'--port={self.port}'],
            self._answers, workdir)

    def _answers(self):
        if not servers.port_open(self.port):
            return False
        from google.cloud import pubsub_v1
        client = pubsub_v1.PublisherClient()
        list(client.list_topics(request={'project':
                                         f'projects/{self.PROJECT}'},
                                timeout=2))
        return True

    def topic(self, name):
        from google.cloud import pubsub_v1
        path = f'projects/{self.PROJECT}/topics/{name}'
        pubsub_v1.PublisherClient().create_topic(name=path)
        return path

    def subscription(self, topic, name):
        from google.cloud import pubsub_v1
        path = f'projects/{self.PROJECT}/subscriptions/{name}'
        with pubsub_v1.SubscriberClient() as subscriber:
            subscriber.create_subscription(name=path, topic=topic,
                                           ack_deadline_seconds=60)
        return path


@pytest.fixture(scope='session')
def pubsub(tmp_path_factory):
    emulator = PubSubEmulator(tmp_path_factory.mktemp('pubsub'))
    previous = os.environ.get('PUBSUB_EMULATOR_HOST')
    os.environ['PUBSUB_EMULATOR_HOST'] = emulator.host
    try:
        emulator.server.start()
        yield emulator
    finally:
        emulator.server.stop()
        if previous is None:
            os.environ.pop('PUBSUB_EMULATOR_HOST', None)
        else:
            os.environ['PUBSUB_EMULATOR_HOST'] = previous
