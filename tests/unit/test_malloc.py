"""console/core/malloc.py on this machine's glibc, each case in a fresh Python (malloc's settings are per process):
a relay-sized buffer comes from the heap and stays there once freed, where glibc's defaults map it and hand it
back (the page faults that cost 44% of the inbound relay)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from console.core.malloc import glibc

PROBE = """
import ctypes, sys
from console.core.malloc import keep_large_buffers

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert keep_large_buffers()
mapped = libc.mallinfo2().hblks
buffers = [bytearray(512 * 1024) for _ in range(8)]  # 4 MiB of relay-sized buffers (asyncio reads 256 KiB)
mapped = libc.mallinfo2().hblks - mapped
heap = libc.mallinfo2().arena
del buffers
print(mapped, libc.mallinfo2().arena >= heap >= 4 * 1024 * 1024)
"""


def _probe(mode: str) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not glibc(), reason="mallopt is glibc's")
def test_relay_sized_buffers_come_from_the_heap_and_stay():
    assert _probe("glibc").split() == ["8", "False"]  # glibc's defaults: each one mapped, and unmapped when freed
    assert _probe("tuned").split() == ["0", "True"]   # tuned: from the heap, kept when freed
