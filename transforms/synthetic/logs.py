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
import datetime
import random

import orjson

from transforms.synthetic import SyntheticStream, Ticks, parse_start, \
    stream_ticks

PARAMS = {
    'events': (int, 30000, 'number of records (malformed ones included)'),
    'seed': (int, 42, 'random seed: the same seed gives the same stream'),
    'rate': (float, 100.0, 'records per second of event time'),
    'services': (int, 5, 'number of services (1..8)'),
    'start': (str, '2026-01-01T00:00:00Z', 'event time of the first record'),
    'disorder': (float, 5.0, 'max out-of-order delay of on-time records, s'),
    'late': (float, 0.01, 'fraction of stragglers delayed 20 s to 6 min'),
    'malformed': (float, 0.005, 'fraction of malformed records'),
    'tick': (float, 1.0, 'seconds of processing time per source step'),
}

SERVICES = ('checkout', 'search', 'auth', 'catalog', 'payments', 'profile',
            'inventory', 'shipping')
PATHS = ('/api/v1/items', '/api/v1/cart', '/login', '/search?q=shoes',
         '/api/v1/orders/1234', '/health')
USERS = ('alice@example.com', 'bob.smith@mail.example.org', 'carol@corp.test')
INCIDENT = (120.0, 180.0)   # seconds after start: the first service misbehaves


def _rfc3339(seconds: float) -> str:
    dt = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return dt.isoformat(timespec='milliseconds').replace('+00:00', 'Z')


def _clf_time(seconds: float) -> str:
    dt = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return dt.strftime('%d/%b/%Y:%H:%M:%S +0000')


def _client_ip(rng):
    if rng.random() < 0.1:
        return f'2001:db8::{rng.randrange(1, 0xffff):x}'
    return f'203.0.113.{rng.randrange(1, 255)}'


def _record(rng, t, service, incident):
    error_p = 0.4 if incident else 0.01
    median = 320.0 if incident else 40.0
    latency = rng.lognormvariate(0, 0.8) * median
    error = rng.random() < error_p
    status = rng.choice((500, 502, 503)) if error else rng.choice(
        (200, 200, 200, 201, 204, 301, 404))
    ip = _client_ip(rng)
    kind = rng.random()
    if kind < 0.7:
        message = rng.choice((
            f'request from {ip} user {rng.choice(USERS)} completed',
            f'GET {rng.choice(PATHS)} from {ip}',
            'Authorization: Bearer ' + ''.join(
                rng.choice('abcdefghijklmnopqrstuvwxyz0123456789')
                for _ in range(24)) + ' accepted',
            'cache refresh done',
        ))
        if error:
            message = f'upstream failed for {ip}: connection reset'
        doc = {
            'timestamp': _rfc3339(t),
            'service': service,
            'level': 'ERROR' if error else rng.choice(('INFO', 'INFO', 'DEBUG')),
            'status': status,
            'latency_ms': round(latency, 3),
            'host': f'{service}-{rng.randrange(3)}',
            'message': message,
        }
        return orjson.dumps(doc)
    if kind < 0.9:
        return (f'{service}:443 {ip} - - [{_clf_time(t)}] '
                f'"GET {rng.choice(PATHS)} HTTP/1.1" {status} '
                f'{rng.randrange(100, 50000)} "-" "Mozilla/5.0 (X11; Linux)" '
                f'{latency / 1000:.3f}').encode()
    severity = 3 if error else 6
    pri = 16 * 8 + severity            # facility local0
    return (f'<{pri}>1 {_rfc3339(t)} {service}-{rng.randrange(3)} {service} '
            f'{rng.randrange(100, 999)} - - '
            f'{"worker crashed" if error else "job finished"} for '
            f'{rng.choice(USERS)}').encode()


def _malformed(rng, t, service):
    good = _record(rng, t, service, False)
    return rng.choice((
        good[:max(1, len(good) // 2)],                       # truncated
        b'\xff\xfe' + good[2:],                              # not UTF-8
        orjson.dumps({'service': service, 'message': 'no time'}),
        orjson.dumps({'timestamp': _rfc3339(t), 'service': service,
                      'status': 'abc'}),
        orjson.dumps({'timestamp': _rfc3339(t), 'service': service,
                      'latency_ms': -5}),
        b'',
        b'\x00\x01\x02 binary junk',
        b'<999>1 not syslog at all',
    ))


def generate(params: dict) -> SyntheticStream:
    """The stream for ``params``, generated lazily each time its ticks are
    iterated."""
    return SyntheticStream(
        Ticks(lambda: stream_ticks(_records(params), params['tick'],
                                   params['disorder'],
                                   parse_start(params['start']))),
        params['tick'])


def _records(params: dict):
    """(event time, arrival, payload, later) in event-time order: ``later``
    (the event time) bounds the arrival of every record still to come."""
    rng = random.Random(params['seed'])
    start = parse_start(params['start'])
    n, rate = params['events'], params['rate']
    services = SERVICES[:max(1, min(params['services'], len(SERVICES)))]
    disorder = params['disorder']
    for i in range(n):
        t = start + i / rate
        service = services[i % len(services)]
        offset = t - start
        if rng.random() < params['malformed']:
            payload = _malformed(rng, t, service)
        else:
            incident = (service == services[0]
                        and INCIDENT[0] <= offset < INCIDENT[1])
            payload = _record(rng, t, service, incident)
        if rng.random() < params['late']:
            delay = rng.uniform(20.0, 360.0)
        else:
            delay = rng.uniform(0.0, disorder)
        yield t, t + delay, payload, t
