"""Arrays held as file pages instead of the process's own memory, and their resident pages let go.

A file mapping's pages count in the process's RSS once read, until it is unmapped: scanning
four 400,000-bin sections of 1024-d embeddings leaves 6.5 GB resident although the kernel
could drop every page and read it back from its file cache. The graph stage's long scans
(standardisation, the cross-section search, the reference rows, the store writes) let go of
a mapped array's pages once they are done with them (`drop_resident_pages`).
"""

from __future__ import annotations

import mmap
import tempfile

import numpy as np


def spilled(values: np.ndarray) -> np.ndarray:
    """`values` copied to an unlinked temporary file (under TMPDIR) and mapped back, read-only.

    The graph stage holds every section's embeddings at once; mapped, they are file cache the kernel pages
    in and drops as memory requires instead of the process's own memory (4 x 400,000 8 um bins x 1024
    float32 is 6.5 GB). The file goes when the array does. Read-only, so dropping its pages loses nothing.
    """
    values = np.ascontiguousarray(values)
    if values.nbytes == 0:
        return values.copy()
    try:
        with tempfile.TemporaryFile(prefix="spahgc-spill-") as file:
            file.write(values.reshape(-1).view(np.uint8).data)
            file.flush()
            mapped = mmap.mmap(file.fileno(), values.nbytes, access=mmap.ACCESS_READ)
    except OSError as error:
        raise OSError(
            f"Could not hold {values.nbytes / 2**20:,.0f} MiB of embeddings in a temporary file under "
            f"'{tempfile.gettempdir()}' ({error}): free space there or point TMPDIR at a disk with room."
        ) from error
    return np.frombuffer(mapped, dtype=values.dtype).reshape(values.shape)


def drop_resident_pages(values: np.ndarray) -> None:
    """Let the kernel drop the resident pages of the read-only file mapping `values` views (spilled, or a store
    array opened with `mmap_mode="r"`); the next read takes them from the file cache. Other arrays: nothing.

    Writeable arrays are left alone: a copy-on-write mapping's written pages would be lost.
    """
    if not isinstance(values, np.ndarray) or values.flags.writeable or not hasattr(mmap, "MADV_DONTNEED"):
        return
    base = values
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer's base
        base = base.obj
    if isinstance(base, mmap.mmap) and not base.closed:
        base.madvise(mmap.MADV_DONTNEED)
