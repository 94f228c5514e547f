"""Peak resident memory of this process, measured the way that survives being started by a big one.

Linux keeps `ru_maxrss` across `execve` as the larger of the new program's peak and the parent's
size when it forked (the forked copy's high-water mark is folded into the process's signal struct),
so a small child of a 1 GB pytest or benchmark process reports 1 GB. `VmHWM` in
/proc/self/status belongs to the current address space only: the program's own peak.
"""

from __future__ import annotations

import resource
from pathlib import Path

STATUS = Path("/proc/self/status")


def peak_rss_bytes() -> int:
    """This address space's peak resident set (VmHWM); `ru_maxrss` where /proc is missing."""
    try:
        for line in STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
