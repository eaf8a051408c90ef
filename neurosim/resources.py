"""What a run will need, checked before it starts: memory for its arrays, disk for its file.

A run whose output cannot fit is refused in one line with the numbers and a way out,
rather than filling the disk or the memory after minutes of work.  The estimates are
lower bounds of what the arrays take; a check passes ``check=False`` to skip it where the
user knows better (memory is overcommitted, space will be freed).
"""

from __future__ import annotations

import os
import shutil

from neurosim.errors import ResourceError

#: a run may take at most this share of the memory available when it starts
MEMORY_SHARE = 0.8


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest unit that keeps one digit before the point."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    raise AssertionError("unreachable")


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get without swapping (Linux's MemAvailable),
    or None where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require_memory(nbytes: float, what: str, remedy: str, *, check: bool = True) -> None:
    """ResourceError unless ``nbytes`` fit in the memory available now."""
    if not check:
        return
    free = available_memory()
    if free is not None and nbytes > MEMORY_SHARE * free:
        raise ResourceError(f"{what} would take {format_bytes(nbytes)} of memory, but only "
                            f"{format_bytes(free)} are available; {remedy}")


def require_disk(nbytes: float, folder, what: str, remedy: str, *, check: bool = True) -> None:
    """ResourceError unless ``nbytes`` fit in the free space of ``folder``'s file system."""
    if not check:
        return
    usage = shutil.disk_usage(folder)
    free = usage.free
    if usage.total and nbytes > free:  # a total of 0: a pseudo file system that does not say
        raise ResourceError(f"{what} would take {format_bytes(nbytes)}, but only "
                            f"{format_bytes(free)} are free in {folder}; {remedy}")
