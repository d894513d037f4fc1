"""Sizes checked against the memory there is, before anything is allocated.

A network compiled for a batch of a billion, a layer with 10**30 inputs, a data file or a checkpoint whose
header claims a huge array: each would end in NumPy's MemoryError (a traceback), or worse in the kernel's
out-of-memory killer taking the machine's other programs with it. `check_allocation` turns each into a
NetcError that names what was to be allocated and how big it is, before the allocation.
"""

from __future__ import annotations

import os

from netc.compiler.errors import NetcError

UNITS = (("EB", 10**18), ("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))


def available_bytes() -> int | None:
    """The memory a new allocation can have without swapping: Linux's MemAvailable, else the physical memory;
    None where neither is known."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


SMALLER = "use a smaller batch size or smaller layers"


def check_allocation(nbytes: int, what: str, limit: int | None = None, hint: str = SMALLER) -> None:
    """A NetcError if `nbytes` for `what` ("the arena of LeNet's training step") exceed `limit`, by default
    the memory available now."""
    limit = available_bytes() if limit is None else limit
    if limit is not None and nbytes > limit:
        raise NetcError(
            f"{what} needs {format_bytes(nbytes)}, more than the {format_bytes(limit)} of memory available",
            hint=hint,
        )


def format_bytes(nbytes: int) -> str:
    """2.1 GB, 512 MB, 40 kB: decimal units, as free(1) -h and file managers show them."""
    if nbytes >= 10**21:  # past exabytes (and past what a float holds, for a layer of 10**400 features)
        return f"about 10^{len(str(nbytes)) - 1} bytes"
    for unit, size in UNITS:
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes} bytes"
