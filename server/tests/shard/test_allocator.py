"""The shard's allocator settings (shard/allocator.py): a large block comes from the heap and, once freed, stays
there for the next step, instead of being mapped fresh and unmapped again (page faults on every step).

Read from glibc's own accounting (mallinfo2) around one malloc/free of 24 MB (a decode step's gathered K/V is
of that order), in a fresh interpreter per case since the settings are process-wide.
"""
from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from textgen_server.shard.allocator import keep_freed_memory

BLOCK = 24 << 20
PROGRAM = """
import ctypes, sys
from textgen_server.shard.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2()
block = libc.malloc(%d)
ctypes.memset(block, 1, %d)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(during.hblkhd - before.hblkhd, after.fordblks - before.fordblks)
""" % (BLOCK, BLOCK)


def _accounting(mode: str) -> tuple[int, int]:
    """(bytes mapped for the block, bytes of free heap kept after freeing it)."""
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    mapped, kept = out.stdout.split()
    return int(mapped), int(kept)


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2) to read the heap's accounting")
def test_a_freed_large_block_stays_in_the_heap_only_with_the_settings() -> None:
    mapped, kept = _accounting("default")
    assert mapped >= BLOCK and kept < BLOCK, f"glibc's default maps the block and unmaps it: {mapped=} {kept=}"
    mapped, kept = _accounting("tuned")
    assert mapped == 0 and kept >= BLOCK, f"with the settings it comes from the heap and stays: {mapped=} {kept=}"


@pytest.mark.skipif(not _has_mallinfo2(), reason="glibc only")
def test_the_settings_apply_on_glibc() -> None:
    assert keep_freed_memory() is True
