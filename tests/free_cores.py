"""The cores free right now, for `make test`'s pytest workers (one per free core, at least one).

Beside a training run on one of 2 cores, two workers took 649 s where one took 488 s for the same
test files (tests/README.md): a second worker on a busy core slows both. The free share is read
from the kernel's CPU counters (``/proc/stat``) over half a second; where they cannot be read,
every core counts as free (pytest-xdist's ``-n auto``)."""

from __future__ import annotations

import os
import time


def idle_share(before: list[int], after: list[int]) -> float:
    """The share of CPU time spent idle (idle and iowait) between two ``/proc/stat`` ``cpu`` lines."""
    spent = [b - a for a, b in zip(before, after)]
    return (spent[3] + spent[4]) / max(1, sum(spent))


def free_cores(cores: int, idle: float) -> int:
    return max(1, round(cores * idle))


def _counters() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(field) for field in stat.readline().split()[1:]]


if __name__ == "__main__":
    cores = os.cpu_count() or 1
    try:
        before = _counters()
        time.sleep(0.5)
        print(free_cores(cores, idle_share(before, _counters())))
    except (OSError, ValueError, IndexError):
        print(cores)
