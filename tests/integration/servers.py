"""Real servers for the integration tests, started and stopped by the tests.

Each server runs as a child process on a free loopback port, in a process
group of its own; :meth:`Server.start` waits until it answers (or fails with
the tail of its log), :meth:`Server.stop` stops it by its process id (TERM,
then KILL).  A server that is not installed fails the test with a message
saying how to install it: the integration tests are part of the suite and
must not pass by skipping.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest


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


def require(path, what, how):
    """The path of an installed server program, or a failed test that says
    how to install it."""
    if path and os.path.exists(path):
        return path
    pytest.fail(f'{what} is not installed ({path or "not found"}); {how}',
                pytrace=False)


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
        pytest.fail(f'{self.name} ({" ".join(self.argv)}) {what}; last lines '
                    f'of its log:\n{self.log_tail()}', pytrace=False)

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
