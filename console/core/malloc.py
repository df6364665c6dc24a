"""glibc's malloc told to keep the large buffers a transfer goes through, instead of handing them back to the
kernel and faulting them in again (issue 15). Called once at daemon start; glibc only (elsewhere it does nothing).

Why: a forwarded connection moves its bytes through buffers of 32 KiB to 256 KiB (asyncio reads up to 256 KiB
at a time; asyncssh joins what arrives to what it holds and slices packets off it). glibc serves a request of
128 KiB or more with its own mmap and returns it with munmap on free; after the first such free it raises that
threshold (up to 32 MiB) and lets the heap's top shrink by `brk` whenever more than twice that is free there.
A transfer then keeps growing and shrinking the heap: profiled inbound (perf), 44% of the daemon's time went to
page faults, thousands of `brk` calls per 512 MiB. Fixing both thresholds keeps the memory once taken:

- M_MMAP_THRESHOLD (MMAP_THRESHOLD): requests below it come from the heap, whose freed chunks are reused.
- M_TRIM_THRESHOLD (TRIM_THRESHOLD): the heap's top is handed back only when more than this is free there.

The cost: up to TRIM_THRESHOLD of freed heap stays in the process (RSS) after a burst of traffic instead of
going back to the kernel; nothing is kept while no transfer ever needed it. bench/throughput.py measures the gain
("glibc" variant beside "shipped"), bench/hub_storm.py the hub's memory with it.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("console.daemon")

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20


def glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # not a glibc system (musl, macOS): no such name
        return False


def keep_large_buffers(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set both thresholds (see the module's notes); False where the C library is not glibc or refuses."""
    if not glibc():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and libc.mallopt(M_TRIM_THRESHOLD,
                                                                                      trim_threshold) == 1
    except (OSError, AttributeError):
        done = False
    if not done:
        log.info("malloc: glibc's thresholds left as they are (mallopt refused)")
    return done
