"""Fixtures starting the real servers the integration tests talk to (one per
test module, stopped after it: an idle broker still costs CPU).

A server that is missing or does not start fails the test (never skips)."""
import os

import pytest

from pipelines.local_servers import (BigQueryEmulator, KafkaBroker,
                                     PubSubEmulator, ServerError)


def _serve(make, workdir, env_name=None, env_value=None):
    """Start the server ``make(workdir)`` builds (setting the environment
    variable that points clients at it); yield it; stop it."""
    try:
        server = make(workdir)
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    previous = os.environ.get(env_name) if env_name else None
    if env_name:
        os.environ[env_name] = env_value(server)
    try:
        server.server.start()
        yield server
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        server.server.stop()
        if env_name and previous is None:
            os.environ.pop(env_name, None)
        elif env_name:
            os.environ[env_name] = previous


@pytest.fixture(scope='module')
def kafka(tmp_path_factory):
    yield from _serve(KafkaBroker, tmp_path_factory.mktemp('kafka'))


@pytest.fixture(scope='module')
def pubsub(tmp_path_factory):
    yield from _serve(PubSubEmulator, tmp_path_factory.mktemp('pubsub'),
                      'PUBSUB_EMULATOR_HOST', lambda s: s.host)


@pytest.fixture(scope='module')
def bigquery(tmp_path_factory):
    yield from _serve(BigQueryEmulator, tmp_path_factory.mktemp('bigquery'),
                      'BIGQUERY_EMULATOR_HOST', lambda s: s.endpoint)
