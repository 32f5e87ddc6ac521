"""Handing the memory that the decomposition freed back to the operating system.

Decomposing a model allocates and frees many large temporaries (Gram matrices, float64 copies for the tail
refinement, the dense weights themselves). glibc's allocator keeps freed blocks inside its heap for reuse, so
without a trim a process stays that much larger for the whole training run (about 100 MB on BERT-base, measured
by ``benchmarks/speed``). :func:`return_freed_memory` asks the allocator to release them (``malloc_trim``); on
other C libraries and platforms it does nothing.

Example:
    >>> from vf_core.heap import return_freed_memory
    >>> isinstance(return_freed_memory(), bool)
    True
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["return_freed_memory"]


def return_freed_memory() -> bool:
    """Release the heap's free blocks to the operating system; True when glibc gave some memory back."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only (musl and others have no malloc_trim)
    except (OSError, AttributeError):
        return False
    return bool(trim(0))
