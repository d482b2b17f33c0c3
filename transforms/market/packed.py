"""Columns packed for travel and rest, exactly: what a bar keeps per
``trade_id`` while it waits for the partials it may still merge with.

A batch run on the in-process runner holds every bar accumulator several
times over (in the combine's table, encoded on its way to the shuffle,
decoded in the shuffle's table, encoded again for the step after it), so the
bytes an id costs there count several times.  Packed, an id costs about 6
bytes instead of 30:

* text (the ids): the lengths (one byte each while ids are shorter than 256
  bytes) and the characters, each compressed with zstd (Arrow's codec);
* floats (sizes, prices): where every value is a whole multiple of
  ``10**-scale`` for a scale of 0..6 (whole sizes, prices in cents or
  hundredths of a cent) and comes back bit for bit from ``int / 10**scale``,
  the integers, compressed; otherwise the float64 bytes, compressed.

Unpacking gives back the very same values (the float check compares bit
patterns), so nothing computed from them changes.
"""
import numpy as np
import pyarrow as pa

CODEC = pa.Codec('zstd', compression_level=1)
MAX_SCALE = 6
_EXACT_INT = 2.0 ** 53


def _compress(array: np.ndarray) -> bytes:
    return CODEC.compress(np.ascontiguousarray(array), asbytes=True)


def _decompress(data: bytes, dtype, count: int) -> np.ndarray:
    dtype = np.dtype(dtype)
    if count == 0:
        return np.zeros(0, dtype)
    raw = CODEC.decompress(data, decompressed_size=count * dtype.itemsize,
                           asbytes=True)
    return np.frombuffer(raw, dtype).copy()


def _smallest_int(values: np.ndarray) -> np.ndarray:
    if not len(values):
        return values.astype(np.int32)
    lo, hi = values.min(), values.max()
    for dtype in (np.uint8, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return values.astype(dtype)
    return values.astype(np.int64)


def _scaled(values: np.ndarray, scale: int):
    """The integers ``values * 10**scale`` if ``int / 10**scale`` gives the
    values back bit for bit, else None."""
    factor = 10.0 ** scale
    whole = np.round(values * factor)
    if not np.all(np.abs(whole) < _EXACT_INT):      # also False for NaN, inf
        return None
    ints = whole.astype(np.int64)
    # The very operation unpack_floats does, compared bit for bit (-0.0 and
    # NaN stay floats).
    back = ints.astype(np.float64) / factor
    return ints if np.array_equal(back.view(np.int64),
                                  values.view(np.int64)) else None


def pack_floats(values) -> tuple:
    """float64 values -> (count, scale or None, dtype, compressed bytes)."""
    values = np.ascontiguousarray(values, np.float64)
    # The smallest scale that fits a few values is tried on all first.
    head = values[:32]
    with np.errstate(over='ignore', invalid='ignore'):
        for scale in range(MAX_SCALE + 1):
            if _scaled(head, scale) is None:
                continue
            for bigger in range(scale, MAX_SCALE + 1):
                ints = _scaled(values, bigger)
                if ints is not None:
                    ints = _smallest_int(ints)
                    return (len(values), bigger, ints.dtype.str,
                            _compress(ints))
            break
    return (len(values), None, '<f8', _compress(values))


def unpack_floats(packed: tuple) -> np.ndarray:
    count, scale, dtype, data = packed
    values = _decompress(data, dtype, count)
    if scale is None:
        return values
    # The same operation pack_floats checked, so the same bits.
    return values.astype(np.int64).astype(np.float64) / (10.0 ** scale)


def pack_strings(array: pa.Array) -> tuple:
    """A string array without nulls -> (count, length dtype, compressed
    lengths, characters' byte count, compressed characters)."""
    if array.null_count:
        raise ValueError('pack_strings: the array holds nulls')
    array = array.cast(pa.string())
    count = len(array)
    if count == 0:
        return (0, '<i4', b'', 0, b'')
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32,
                            count=count + 1, offset=array.offset * 4)
    lengths = np.diff(offsets)
    lengths = lengths.astype(np.uint8) if lengths.max() < 256 else lengths
    start, end = int(offsets[0]), int(offsets[-1])
    chars = np.frombuffer(data_buffer, np.uint8, count=end - start,
                          offset=start) if end > start else \
        np.zeros(0, np.uint8)
    return (count, lengths.dtype.str, _compress(lengths), end - start,
            _compress(chars))


def unpack_strings(packed: tuple) -> pa.Array:
    count, dtype, lengths, size, chars = packed
    if count == 0:
        return pa.array([], pa.string())
    lengths = _decompress(lengths, dtype, count)
    offsets = np.zeros(count + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = _decompress(chars, np.uint8, size)
    return pa.Array.from_buffers(pa.string(), count, [
        None, pa.py_buffer(offsets), pa.py_buffer(data)])
