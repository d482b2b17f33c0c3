"""make bench writes its inputs a chunk at a time and reports every memory
row with its own process's peak."""
import pytest

from bench import common, run


def test_write_lines_writes_every_payload_a_chunk_at_a_time(tmp_path):
    pulled = []

    def payloads():
        for i in range(25):
            pulled.append(i)
            yield b'line %d' % i

    writes = []
    path = tmp_path / 'x.jsonl'

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            writes.append((len(pulled), data.count(b'\n')))
            return self.f.write(data)

    real_open = open
    common.open = lambda p, mode: Spy(real_open(p, mode))
    try:
        assert common.write_lines(path, payloads(), chunk=10) == path
    finally:
        del common.open
    assert path.read_bytes() == b''.join(b'line %d\n' % i for i in range(25))
    # Each chunk is written before the next is made.
    assert writes == [(10, 10), (20, 10), (25, 5)]
    assert not path.with_suffix('.tmp').exists()


def test_the_table_lists_every_memory_row_and_the_bench_own_peak():
    memory = {name: {'events': 10_000_000, 'peak_mib': 400.0 + i,
                     'rate': 1e6, 'wall_s': 30.0}
              for i, name in enumerate(run.MEMORY)}
    text, _ = run.table([], memory, 100_000, own_peak=321.4)
    for i, name in enumerate(run.MEMORY):
        assert f'| {name} | 10,000,000 | {400 + i} |' in text
    assert "bench/run.py's own process" in text and '321 MiB' in text
    assert f'of any measured child: {400 + len(run.MEMORY) - 1} MiB' in text
    assert 'min ratio to pyarrow' not in text      # no throughput rows run


def test_only_names_the_memory_rows(capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(['--only', 'memory-nothing'])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for name in run.MEMORY:
        assert f'memory-{name}' in err
