"""Local servers for the demos (``make demo-kafka``, ``make demo-pubsub``) and
the integration tests: a Kafka-protocol broker (noida-db) and Google's Pub/Sub
emulator.

Each server runs as a child process on a free loopback port, in a process
group of its own; :meth:`Server.start` waits until it answers (or raises
:class:`ServerError` with the tail of its log), :meth:`Server.stop` stops it
by its process id (TERM, then KILL).  A server that is not installed raises
:class:`ServerError` saying how to install it (the tests fail on it: they
must not pass by skipping).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time



def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def port_open(port, host='127.0.0.1') -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerError(RuntimeError):
    """A server that is not installed, or did not start; the message says
    why and what to do."""


def require(path, what, how):
    """The path of an installed server program, or ServerError saying how to
    install it."""
    if path and os.path.exists(path):
        return path
    raise ServerError(f'{what} is not installed ({path or "not found"}); '
                      f'{how}')


def venv_program(name):
    """A program installed beside this Python (in the virtual environment)."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else shutil.which(name)


class Server:
    def __init__(self, name, argv, ready, workdir, env=None,
                 timeout=120.0):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.ready = ready                  # () -> bool
        self.workdir = str(workdir)
        self.env = env
        self.timeout = timeout
        self.process = None
        self.log_path = os.path.join(self.workdir, f'{name}.log')

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        env = dict(os.environ, **(self.env or {}))
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.workdir, env=env,
                start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f'exited with status {self.process.returncode}')
            try:
                if self.ready():
                    return self
            except Exception:   # pylint: disable=broad-except
                pass            # not answering yet
            time.sleep(0.25)
        self.stop()
        self._fail(f'did not answer within {self.timeout:.0f} s')
        return self

    def _fail(self, what):
        raise ServerError(f'{self.name} ({" ".join(self.argv)}) {what}; last '
                          f'lines of its log:\n{self.log_tail()}')

    def log_tail(self, lines=30) -> str:
        try:
            with open(self.log_path, 'rb') as f:
                text = f.read().decode('utf-8', 'replace')
        except OSError:
            return '(no log)'
        return '\n'.join(text.splitlines()[-lines:])

    def stop(self, timeout=15.0):
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def restart(self):
        self.stop()
        return self.start()


def _kafka_answers(port):
    from confluent_kafka.admin import AdminClient
    # While the broker starts, the client's connection errors are expected.
    admin = AdminClient({'bootstrap.servers': f'127.0.0.1:{port}',
                         'log_level': 0})
    # The port opens before the data is loaded: wait for broker metadata.
    return bool(admin.list_topics(timeout=2).brokers)


def _noida_binary():
    """The broker binary itself: the ``noida-db`` command is a wrapper whose
    TERM leaves the binary running, so the binary is started (and stopped)."""
    try:
        import noida_db
    except ImportError:
        return None
    return os.path.join(os.path.dirname(noida_db.__file__), 'noida-db')


class KafkaBroker:
    """A Kafka-protocol broker (noida-db) on a loopback port."""

    def __init__(self, workdir):
        program = require(
            _noida_binary(), 'the Kafka-protocol broker noida-db',
            'install requirements-dev.txt (make install)')
        self.port = free_port()
        self.brokers = f'127.0.0.1:{self.port}'
        self.server = Server(
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
        from transforms.io import kafka  # pylint: disable=import-outside-toplevel
        kafka.create_topic(self.brokers, topic, partitions,
                           {'retention.ms': '-1'}, exist_ok=False)


def _pubsub_emulator():
    """Google's Pub/Sub emulator: PUBSUB_EMULATOR_BIN, or the launcher in the
    Google Cloud SDK beside ``gcloud`` (Debian package
    google-cloud-cli-pubsub-emulator)."""
    if os.environ.get('PUBSUB_EMULATOR_BIN'):
        return os.environ['PUBSUB_EMULATOR_BIN']
    gcloud = shutil.which('gcloud')
    if not gcloud:
        return None
    sdk = os.path.dirname(os.path.dirname(os.path.realpath(gcloud)))
    return os.path.join(sdk, 'platform', 'pubsub-emulator', 'bin',
                        'cloud-pubsub-emulator')


class PubSubEmulator:
    PROJECT = 'rtp-test'

    def __init__(self, workdir):
        program = require(
            _pubsub_emulator(), "Google's Pub/Sub emulator",
            'install the Debian package google-cloud-cli-pubsub-emulator '
            '(with a Java runtime) or set PUBSUB_EMULATOR_BIN')
        self.port = free_port()
        self.host = f'127.0.0.1:{self.port}'
        self.server = Server(
            'pubsub', [program, '--host=127.0.0.1', f'--port={self.port}'],
            self._answers, workdir)

    def _answers(self):
        if not port_open(self.port):
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

    def subscription(self, topic, name, ack_deadline_seconds=60):
        from google.cloud import pubsub_v1
        path = f'projects/{self.PROJECT}/subscriptions/{name}'
        with pubsub_v1.SubscriberClient() as subscriber:
            subscriber.create_subscription(
                name=path, topic=topic,
                ack_deadline_seconds=ack_deadline_seconds)
        return path


# Copies DuckDB's spatial extension from its wheel to where DuckDB looks for
# it: the emulator loads it at start and cannot download it offline.  Run by
# the emulator's own Python (its DuckDB version decides the folder).
_INSTALL_SPATIAL = '''
import importlib.util, os, shutil, duckdb
version = 'v' + duckdb.__version__
spec = importlib.util.find_spec('duckdb_extension_spatial')
if spec is None:
    raise SystemExit('duckdb-extension-spatial is not installed')
source = os.path.join(os.path.dirname(spec.origin), 'extensions', version,
                      'spatial.duckdb_extension')
if not os.path.exists(source):
    raise SystemExit(f'the spatial wheel has no extension for DuckDB {version}')
con = duckdb.connect()
platform = con.execute('PRAGMA platform').fetchone()[0]
folder = con.execute("SELECT current_setting('extension_directory')").fetchone()[0] \\
    or os.path.join(os.path.expanduser('~'), '.duckdb', 'extensions')
target = os.path.join(folder, version, platform)
os.makedirs(target, exist_ok=True)
shutil.copyfile(source, os.path.join(target, 'spatial.duckdb_extension'))
con.execute('LOAD spatial')
'''


def _bqemulator():
    """The BigQuery emulator: BQEMULATOR_BIN, or the one `make install` puts
    in the virtual environment's bqemulator/ folder."""
    if os.environ.get('BQEMULATOR_BIN'):
        return os.environ['BQEMULATOR_BIN']
    return os.path.join(sys.prefix, 'bqemulator', 'bin', 'bqemulator')


def _http_ok(url) -> bool:
    import urllib.request  # pylint: disable=import-outside-toplevel
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


class BigQueryEmulator:
    """A BigQuery emulator (bqemulator, REST and gRPC) on loopback ports."""
    PROJECT = 'rtp-test'

    def __init__(self, workdir):
        program = require(
            _bqemulator(), 'the BigQuery emulator bqemulator',
            'run make install (it installs requirements-bqemulator.txt into '
            '.venv/bqemulator) or set BQEMULATOR_BIN')
        python = os.path.join(os.path.dirname(program), 'python')
        done = subprocess.run([python, '-c', _INSTALL_SPATIAL],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServerError(f'installing DuckDB\'s spatial extension for '
                              f'the BigQuery emulator failed: '
                              f'{done.stderr.strip()[-500:]}')
        self.port = free_port()
        grpc_port = free_port()
        self.endpoint = f'http://127.0.0.1:{self.port}'
        self.server = Server(
            'bigquery', [program, 'start', '--rest-host', '127.0.0.1',
                         '--rest-port', self.port, '--grpc-host', '127.0.0.1',
                         '--grpc-port', grpc_port, '--project', self.PROJECT,
                         '--log-level', 'warning'],
            lambda: _http_ok(f'{self.endpoint}/readyz'), workdir,
            # Its optional file-format extensions cannot be downloaded here.
            env={'BQEMU_ENABLE_FORMAT_EXTENSIONS': 'false'})

    def client(self):
        from google.auth.credentials import AnonymousCredentials  # pylint: disable=import-outside-toplevel
        from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
        return bigquery.Client(project=self.PROJECT,
                               credentials=AnonymousCredentials(),
                               client_options={'api_endpoint': self.endpoint})
