"""This process's memory from /proc/self/statm, read here rather than through `benchmarks` (which mutation
testing's copy of the project does not hold)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

on_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads memory from /proc/self/statm")


def statm_mib() -> tuple[float, float]:
    """Resident pages of mapped files and anonymous resident memory (MiB)."""
    resident, shared = (int(field) for field in Path("/proc/self/statm").read_text().split()[1:3])
    page = os.sysconf("SC_PAGE_SIZE") / 2**20
    return shared * page, (resident - shared) * page


def resident_file_mib() -> float:
    """This process's resident pages of mapped files (MiB)."""
    return statm_mib()[0]


def anonymous_mib() -> float:
    """This process's resident memory that is not a mapped file (MiB)."""
    return statm_mib()[1]
