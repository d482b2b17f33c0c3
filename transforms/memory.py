"""Giving freed memory back to the operating system.

A bounded replay on the in-process runner frees many medium-sized Python
objects at once (a stage's shuffled elements, say the compressed fragments
of the video job, tens of KiB each): the C allocator (glibc's malloc) keeps
them in its heap, where they fragment it, and the process's resident memory
does not fall although the objects are gone.  :func:`release_free_memory`
asks the allocator to return the free pages (``malloc_trim(0)``, which
releases free pages inside the heap, not only at its top).  Where the C
library is not glibc it does nothing.
"""
import ctypes
import ctypes.util

_TRIM = None


def _trim():
    global _TRIM  # pylint: disable=global-statement
    if _TRIM is None:
        _TRIM = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
            _TRIM = libc.malloc_trim
            _TRIM.argtypes = [ctypes.c_size_t]
            _TRIM.restype = ctypes.c_int
        except (OSError, AttributeError):
            _TRIM = False
    return _TRIM


def release_free_memory() -> bool:
    """Returns the C heap's free pages to the system; False where it
    cannot (not glibc)."""
    trim = _trim()
    if not trim:
        return False
    trim(0)
    return True
