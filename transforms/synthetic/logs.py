"""A synthetic log stream: JSON lines, nginx combined and RFC 5424 syslog.

What it contains (all deterministic for a seed):

* ``services`` services at ``rate`` records per second of event time, with
  lognormal request latencies and a small background error rate;
* an *incident*: from minute 2 to minute 3 the first service errors heavily and
  slows down, so that alerts are raised and recovered;
* out-of-order arrival (every record delayed by up to ``disorder`` seconds);
* a ``late`` fraction of stragglers delayed by 20 s to 6 min, some within the
  job's allowed lateness and some beyond it;
* a ``malformed`` fraction of broken records (truncated JSON, bad UTF-8,
  wrongly typed fields, garbage);
* personal data in messages (client IPs, e-mail addresses, bearer tokens) for
  the masking step to remove.
"""
import numpy as np
import orjson

from transforms.synthetic import ColumnTicks, SyntheticStream, \
    chunk_tick_columns, parse_start

PARAMS = {
    'events': (int, 30000, 'number of records (malformed ones included)'),
    'seed': (int, 42, 'random seed: the same seed gives the same stream'),
    'rate': (float, 100.0, 'records per second of event time'),
    'services': (int, 5, 'number of services (1..8)'),
    'start': (str, '2026-01-01T00:00:00Z', 'event time of the first record'),
    'disorder': (float, 5.0, 'max out-of-order delay of on-time records, s'),
    'late': (float, 0.01, 'fraction of stragglers delayed 20 s to 6 min'),
    'malformed': (float, 0.005, 'fraction of malformed records'),
    'tick': (float, 60.0, 'seconds of processing time per source step'),
}

SERVICES = ('checkout', 'search', 'auth', 'catalog', 'payments', 'profile',
            'inventory', 'shipping')
PATHS = ('/api/v1/items', '/api/v1/cart', '/login', '/search?q=shoes',
         '/api/v1/orders/1234', '/health')
USERS = ('alice@example.com', 'bob.smith@mail.example.org', 'carol@corp.test')
INCIDENT = (120.0, 180.0)   # seconds after start: the first service misbehaves


# Records are drawn a chunk at a time with numpy (vectorised), then formatted
# one by one from plain lists: the chunk size is part of the stream's
# definition (the same seed and chunk give the same draws).
CHUNK = 4096
TOKEN_ALPHABET = np.frombuffer(b'abcdefghijklmnopqrstuvwxyz0123456789',
                               dtype='S1')
OK_STATUS = (200, 200, 200, 201, 204, 301, 404)
ERROR_STATUS = (500, 502, 503)
JSON_LEVELS = ('INFO', 'INFO', 'DEBUG')
MALFORMED_KINDS = 8


def _rfc3339(seconds: np.ndarray) -> list:
    """Epoch seconds -> RFC 3339 text with milliseconds and 'Z' (truncated
    to the millisecond, as ``isoformat(timespec='milliseconds')``)."""
    ms = np.floor(np.round(seconds * 1e6) / 1e3).astype('datetime64[ms]')
    return [text + 'Z' for text in
            np.datetime_as_string(ms, unit='ms').tolist()]


_MONTH_NAMES = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug',
                'Sep', 'Oct', 'Nov', 'Dec')


def _clf_time(seconds: np.ndarray) -> list:
    """Epoch seconds -> the access log's ``dd/Mon/YYYY:HH:MM:SS +0000``
    (each distinct second formatted once)."""
    whole, index = np.unique(np.floor(seconds).astype('datetime64[s]'),
                             return_inverse=True)
    texts = []
    for text in np.datetime_as_string(whole, unit='s').tolist():
        # 'YYYY-MM-DDTHH:MM:SS'
        texts.append(f'{text[8:10]}/{_MONTH_NAMES[int(text[5:7]) - 1]}/'
                     f'{text[:4]}:{text[11:]} +0000')
    return [texts[i] for i in index.tolist()]


class _Draws:
    """One chunk's random draws, as plain lists (one value per record)."""

    def __init__(self, rng, m):
        self.malformed_u = rng.random(m)
        self.late_u = rng.random(m)
        self.late_delay = rng.uniform(20.0, 360.0, m)
        self.delay_u = rng.random(m)
        self.latency = rng.lognormal(0.0, 0.8, m)
        self.error_u = rng.random(m)
        self.status_ok = rng.integers(0, len(OK_STATUS), m)
        self.status_error = rng.integers(0, len(ERROR_STATUS), m)
        self.ip6 = (rng.random(m) < 0.1).tolist()
        self.ip6_low = rng.integers(1, 0xffff, m).tolist()
        self.ip4_low = rng.integers(1, 255, m).tolist()
        self.kind = rng.random(m).tolist()
        self.message = rng.integers(0, 4, m).tolist()
        self.user = rng.integers(0, len(USERS), m).tolist()
        self.path = rng.integers(0, len(PATHS), m).tolist()
        self.token = TOKEN_ALPHABET[rng.integers(
            0, len(TOKEN_ALPHABET), (m, 24))].view('S24').ravel()
        self.level = rng.integers(0, len(JSON_LEVELS), m).tolist()
        self.host = rng.integers(0, 3, m).tolist()
        self.size = rng.integers(100, 50000, m).tolist()
        self.pid = rng.integers(100, 999, m).tolist()
        self.bad = rng.integers(0, MALFORMED_KINDS, m).tolist()


def _payloads(d, m, names, stamps, clfs, errors, statuses, latencies):
    """The chunk's ``m`` records (draws ``d``; ``names`` their services) as
    payloads: one loop over plain lists, no call per record."""
    out = []
    append = out.append
    for (i, service, stamp, clf, error, status, latency, v6, low6, low4,
         kind, choice, user, path, level, host, size, pid) in zip(
            range(m), names, stamps, clfs, errors, statuses, latencies,
            d.ip6, d.ip6_low, d.ip4_low, d.kind, d.message, d.user, d.path,
            d.level, d.host, d.size, d.pid):
        ip = f'2001:db8::{low6:x}' if v6 else f'203.0.113.{low4}'
        if kind < 0.7:
            if error:
                message = f'upstream failed for {ip}: connection reset'
            elif choice == 0:
                message = f'request from {ip} user {USERS[user]} completed'
            elif choice == 1:
                message = f'GET {PATHS[path]} from {ip}'
            elif choice == 2:
                message = ('Authorization: Bearer '
                           + d.token[i].decode() + ' accepted')
            else:
                message = 'cache refresh done'
            # Every text here is plain ASCII without quotes or backslashes,
            # and a float's repr is its JSON: what orjson.dumps writes.
            append((f'{{"timestamp":"{stamp}","service":"{service}",'
                    f'"level":"{"ERROR" if error else JSON_LEVELS[level]}",'
                    f'"status":{status},'
                    f'"latency_ms":{round(latency, 3)!r},'
                    f'"host":"{service}-{host}","message":"{message}"}}'
                    ).encode())
        elif kind < 0.9:
            append((f'{service}:443 {ip} - - [{clf}] '
                    f'"GET {PATHS[path]} HTTP/1.1" {status} '
                    f'{size} "-" "Mozilla/5.0 (X11; Linux)" '
                    f'{latency / 1000:.3f}').encode())
        else:
            # facility local0, severity 3 (error) or 6
            append((f'<{131 if error else 134}>1 {stamp} {service}-{host} '
                    f'{service} {pid} - - '
                    f'{"worker crashed" if error else "job finished"} for '
                    f'{USERS[user]}').encode())
    return out


def _malformed(good, kind, stamp, service):
    """A broken record of kind ``kind`` (0..7) made from a good one."""
    if kind == 0:
        return good[:max(1, len(good) // 2)]                  # truncated
    if kind == 1:
        return b'\xff\xfe' + good[2:]                         # not UTF-8
    if kind == 2:
        return orjson.dumps({'service': service, 'message': 'no time'})
    if kind == 3:
        return orjson.dumps({'timestamp': stamp, 'service': service,
                             'status': 'abc'})
    if kind == 4:
        return orjson.dumps({'timestamp': stamp, 'service': service,
                             'latency_ms': -5})
    return (b'', b'\x00\x01\x02 binary junk',
            b'<999>1 not syslog at all')[kind - 5]


def generate(params: dict) -> SyntheticStream:
    """The stream for ``params``, generated lazily each time its ticks are
    iterated."""
    return SyntheticStream(
        ColumnTicks(lambda: chunk_tick_columns(
            _chunks(params), params['tick'], params['disorder'],
            parse_start(params['start']))),
        params['tick'])


def _records(params: dict):
    """(event time, arrival, payload, later) in event-time order: ``later``
    (the event time) bounds the arrival of every record still to come."""
    for events, arrivals, payloads, _ in _chunks(params):
        for t, a, payload in zip(events.tolist(), arrivals.tolist(),
                                 payloads):
            yield t, a, payload, t


def _chunks(params: dict):
    """(event times, arrival times, payloads, later) per chunk of
    :data:`CHUNK` records in event-time order; ``later`` (the chunk's last
    event time) bounds the arrival of every record of the chunks after it.
    Drawn a chunk at a time (numpy), formatted one by one."""
    rng = np.random.default_rng(params['seed'])
    start = parse_start(params['start'])
    n, rate = params['events'], params['rate']
    services = SERVICES[:max(1, min(params['services'], len(SERVICES)))]
    disorder = params['disorder']
    for lo in range(0, n, CHUNK):
        m = min(CHUNK, n - lo)
        index = lo + np.arange(m)
        t = start + index / rate
        d = _Draws(rng, m)
        offset = t - start
        incident = ((index % len(services) == 0)
                    & (offset >= INCIDENT[0]) & (offset < INCIDENT[1]))
        malformed = d.malformed_u < params['malformed']
        # A malformed record is made from a good one outside the incident.
        incident &= ~malformed
        error = d.error_u < np.where(incident, 0.4, 0.01)
        status = np.where(error, np.take(ERROR_STATUS, d.status_error),
                          np.take(OK_STATUS, d.status_ok)).tolist()
        latency = (d.latency * np.where(incident, 320.0, 40.0)).tolist()
        late = d.late_u < params['late']
        delay = np.where(late, d.late_delay, d.delay_u * disorder)
        stamps = _rfc3339(t)
        clfs = _clf_time(t)
        error = error.tolist()
        names = [services[(lo + i) % len(services)] for i in range(m)]
        payloads = _payloads(d, m, names, stamps, clfs, error, status,
                             latency)
        for i in np.flatnonzero(malformed).tolist():
            # A copy of its own size: orjson's bytes keep a 4 KiB buffer.
            payloads[i] = bytes(memoryview(_malformed(
                payloads[i], d.bad[i], stamps[i], names[i])))
        yield t, t + delay, payloads, float(t[-1])
