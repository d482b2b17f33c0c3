"""Shared pieces of the benchmarks: seeded inputs, measured subprocess runs,
and the Markdown table.

Every measured run happens in a fresh subprocess, so that its CPU time and
peak resident memory (``ru_maxrss``) are its own.  Events per second *per
core* is events / CPU seconds of that process (all threads), which compares
a single-worker Beam run fairly with a multi-threaded pyarrow computation.
"""
import datetime
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np
import orjson

BENCH = pathlib.Path(__file__).resolve().parent
OUT = BENCH / 'out'
T0 = 1767225600                     # 2026-01-01T00:00:00Z
SERVICES = ('checkout', 'search', 'auth', 'catalog', 'payments', 'profile',
            'inventory', 'shipping')


# Messages of the template-mining benchmark: 24 templates per service whose
# variables (numbers, ids, addresses) change from record to record.
MESSAGE_FORMATS = tuple(
    fmt for i in range(8) for fmt in (
        f'Receiving block blk_{{0}} src: /10.250.{i}.{{1}}:{{2}} dest: /10.250.{i}.2:50010',
        f'Deleted block blk_{{0}} at file /data/{i}/current/subdir{{1}}/blk_{{0}}',
        f'worker-{i} finished task {{1}} of job job_{{0}}_{{2}} in {{1}} ms',
    ))


def logs_input(n: int, seed: int = 7, varied: bool = False) -> pathlib.Path:
    """n JSON log lines over n/1000 seconds of event time (cached by n, seed):
    8 services, 2% errors, lognormal latencies, 1% of records up to 5 s out of
    order.  Messages are one constant text, or with ``varied`` drawn from
    MESSAGE_FORMATS (for template mining)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f'logs-{n}-{seed}{"-varied" if varied else ""}.jsonl'
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix('.tmp')
    with open(tmp, 'wb') as f:
        for lo in range(0, n, 100_000):
            m = min(100_000, n - lo)
            t = T0 + (lo + np.arange(m)) / 1000.0
            jitter = np.where(rng.random(m) < 0.01, rng.uniform(-5, 0, m), 0)
            t = np.round((t + jitter) * 1000) / 1000
            service = rng.integers(0, len(SERVICES), m)
            error = rng.random(m) < 0.02
            latency = np.round(rng.lognormal(3.5, 0.7, m), 3)
            # One buffer per chunk: orjson's bytes keep a 4 KiB buffer
            # each, so a list of 100,000 of them held 400 MiB.
            lines = bytearray()
            for i in range(m):
                stamp = datetime.datetime.fromtimestamp(
                    t[i], tz=datetime.timezone.utc).isoformat(
                        timespec='milliseconds').replace('+00:00', 'Z')
                lines += orjson.dumps({
                    'timestamp': stamp,
                    'service': SERVICES[service[i]],
                    'level': 'ERROR' if error[i] else 'INFO',
                    'status': 503 if error[i] else 200,
                    'latency_ms': float(latency[i]),
                    'host': 'web-1',
                    'message': MESSAGE_FORMATS[
                        (i * 7 + lo) % len(MESSAGE_FORMATS)].format(
                            lo + i, i % 97, 40000 + i % 1000)
                    if varied else 'GET /api/v1/items done',
                })
                lines += b'\n'
            f.write(lines)
    os.replace(tmp, path)
    return path


def write_lines(path: pathlib.Path, payloads, chunk: int = 100_000):
    """Writes ``payloads`` (an iterable of bytes) as lines to ``path``, a
    chunk at a time (never the whole stream in memory), atomically."""
    tmp = path.with_suffix('.tmp')
    with open(tmp, 'wb') as f:
        batch = []
        for payload in payloads:
            batch.append(payload)
            if len(batch) == chunk:
                f.write(b'\n'.join(batch) + b'\n')
                batch = []
        if batch:
            f.write(b'\n'.join(batch) + b'\n')
    os.replace(tmp, path)
    return path


def measured(function, *args):
    """Run ``function(*args)`` here, returning its result plus wall and CPU
    seconds and this process's peak resident memory (MiB)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return {
        'result': result,
        'wall_s': time.perf_counter() - wall,
        'cpu_s': time.process_time() - cpu,
        'peak_mib': peak_mib(),
    }


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does
    not inherit the parent's peak across fork and exec)."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_subprocess(module: str, name: str, *args) -> dict:
    """Runs ``bench/<module>.py --child NAME ARGS`` and returns its JSON."""
    cmd = [sys.executable, str(BENCH / f'{module}.py'), '--child', name,
           *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(BENCH.parent))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd[1:])} failed:\n{done.stderr[-3000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(runs: dict):
    """The ``--child NAME ARGS`` entry point of a benchmark module."""
    name, args = sys.argv[2], sys.argv[3:]
    out = measured(runs[name], *args)
    sys.stdout.write('\n' + json.dumps(out, default=str) + '\n')
