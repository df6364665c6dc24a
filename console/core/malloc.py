"""glibc's malloc told to keep the buffers a transfer goes through instead of handing them back to the kernel and
faulting them in again (issue 15). Called once at daemon start (`sop-console daemon`); glibc only.

Why: a forwarded connection moves its bytes through buffers of 32 KiB to 256 KiB (asyncio reads up to 256 KiB
at a time, asyncssh copies what it sends into buffers of that size, and a peer such as our hub sends packets of
up to 256 KiB). glibc serves a request of 128 KiB or more with its own mmap and returns it with munmap when it
is freed; after the first such free it raises that threshold and trims the heap's top (`brk`) whenever more
than twice that is free there. A transfer then keeps shrinking and growing the heap: profiled inbound (perf),
44% of the daemon's time went to page faults, thousands of `brk` calls per 512 MiB. Fixed thresholds keep the
memory once taken:

- M_MMAP_THRESHOLD = MMAP_THRESHOLD (1 MiB): requests below it (every relay buffer, with room to spare) come
  from the heap, whose freed chunks are reused.
- M_TRIM_THRESHOLD = TRIM_THRESHOLD (8 MiB): the heap's top is handed back only when more than this is free.

Measured (bench/throughput.py, variant "glibc" beside "shipped"; minor page faults per MB relayed, from
/proc/PID/stat): glibc's defaults 56-656 in and 9-34 out (it depends on where its moving threshold settles),
and 24-38% more CPU per MB inbound in four runs of five; 1 MiB / 8 MiB none (0-1), the same as 512 KiB / 4 MiB
and 4 MiB / 32 MiB, while a trim threshold of 1-2 MiB still faults (16-137 per MB). The cost is memory: up to
TRIM_THRESHOLD of freed heap stays in the process after a burst instead of going back to the kernel. The unit's
daemon: about 4 MiB more RSS after the bench (its peak: 1 MiB more); the hub in bench/hub_storm.py (500
clients): 92-93 MiB in nine runs against 90-91 without (4 MiB / 32 MiB: 95).
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("console.daemon")

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 8 << 20


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
