"""What ``/proc/<pid>/stat`` says about a process: its state, parent and CPU time (Linux).

One reader for the launcher (which stub processes belong to a server, whether they are alive)
and for the load tests and benchmarks (how much CPU a server and its model processes used).
"""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after ``pid (comm)``: state, ppid, ... (None when gone).

    ``comm`` may hold spaces and parentheses, so the split is after its last ``)``.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live descendants, plus
    the children they have already reaped (0.0 where it is not readable)."""
    children: dict[int, list[int]] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is None:
            continue
        child = int(entry.name)
        children.setdefault(int(fields[1]), []).append(child)
        times[child] = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0)
        todo += children.get(current, [])
    return total / os.sysconf("SC_CLK_TCK")
