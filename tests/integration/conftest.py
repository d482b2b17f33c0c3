"""Fixtures starting the real servers the integration tests talk to (one per
test module, stopped after it: an idle broker still costs CPU).

A server that is missing or does not start fails the test (never skips)."""
import os

import pytest

from pipelines.local_servers import (BigQueryEmulator, KafkaBroker,
                                     PubSubEmulator, ServerError)


def _start(server):
    try:
        server.start()
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope='module')
def kafka(tmp_path_factory):
    try:
        broker = KafkaBroker(tmp_path_factory.mktemp('kafka'))
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    _start(broker.server)
    yield broker
    broker.server.stop()


@pytest.fixture(scope='module')
def pubsub(tmp_path_factory):
    try:
        emulator = PubSubEmulator(tmp_path_factory.mktemp('pubsub'))
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    previous = os.environ.get('PUBSUB_EMULATOR_HOST')
    os.environ['PUBSUB_EMULATOR_HOST'] = emulator.host
    try:
        _start(emulator.server)
        yield emulator
    finally:
        emulator.server.stop()
        if previous is None:
            os.environ.pop('PUBSUB_EMULATOR_HOST', None)
        else:
            os.environ['PUBSUB_EMULATOR_HOST'] = previous


@pytest.fixture(scope='module')
def bigquery(tmp_path_factory):
    try:
        emulator = BigQueryEmulator(tmp_path_factory.mktemp('bigquery'))
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    previous = os.environ.get('BIGQUERY_EMULATOR_HOST')
    os.environ['BIGQUERY_EMULATOR_HOST'] = emulator.endpoint
    try:
        _start(emulator.server)
        yield emulator
    finally:
        emulator.server.stop()
        if previous is None:
            os.environ.pop('BIGQUERY_EMULATOR_HOST', None)
        else:
            os.environ['BIGQUERY_EMULATOR_HOST'] = previous
