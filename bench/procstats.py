"""What a process uses, read from /proc: resident memory (of one process or its whole tree), CPU
time by thread, open sockets, and the CPU time other processes take on a given CPU."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from bench.background import Background


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from one pass over /proc: {parent pid: [child pids]}."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # exited meanwhile
                continue
            out.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    return out


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants."""
    tree = children_by_parent()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        with contextlib.suppress(OSError, ValueError):  # exited meanwhile
            total += rss_bytes(pid)
    return total


class RssSampler(Background):
    """Samples a process's resident memory (with `tree`: its whole process tree's) every `interval`
    seconds in a thread, so that a busy event loop does not delay the samples."""

    def __init__(self, pid: int, interval: float = 0.1, *, tree: bool = False) -> None:
        super().__init__("rss-sampler")
        self.pid, self.interval, self.tree = pid, interval, tree
        self.samples: list[tuple[float, int]] = []  # (perf_counter, bytes)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                rss = tree_rss(self.pid) if self.tree else rss_bytes(self.pid)
            except (OSError, ValueError):  # the process has exited
                return
            self.samples.append((time.perf_counter(), rss))
            self.stopping.wait(self.interval)

    def peak(self, t0: float = 0.0, t1: float = float("inf")) -> int:
        return max((b for t, b in self.samples if t0 <= t <= t1), default=0)

    def last(self) -> int:
        return self.samples[-1][1] if self.samples else 0


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each thread of a process."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_split(
    pid: int, before: dict[int, float], after: dict[int, float], seconds: float
) -> dict[str, float]:
    """Share of one CPU each kind of server thread used between two thread_cpu() snapshots: the
    event loop (the main thread), the busiest other thread (the inference thread during load) and
    the rest (torch, uvloop workers)."""
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = used.pop(pid, 0.0)
    busiest = max(used.values(), default=0.0)
    return {
        "event_loop": loop / seconds,
        "inference": busiest / seconds,
        "other_threads": (sum(used.values()) - busiest) / seconds,
    }


def open_sockets(pid: int) -> int:
    """TCP sockets the process holds (listening one included)."""
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            n += os.readlink(fd).startswith("socket:")
    return n


class ForeignCpu:
    """CPU time that other processes took on the server's CPU during a point, as a fraction of that
    CPU (0-1): the machine may be shared, and a busy neighbour there invalidates a measurement."""

    def __init__(self, cpu: int, pid: int | None = None, children: bool = False) -> None:
        self.cpu, self.pid, self.children = cpu, pid, children

    def _cpu_busy(self) -> int:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{self.cpu} "):
                fields = [int(x) for x in line.split()[1:9]]
                return sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        raise ValueError(f"no cpu{self.cpu} in /proc/stat")

    def _ours(self) -> int:
        if self.children:  # a pinned subprocess we wait for: counted in our children's times
            fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[13]) + int(fields[14])
        if self.pid is None:
            return 0
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def __enter__(self) -> ForeignCpu:
        self.t0 = time.perf_counter()
        self.b0, self.o0 = self._cpu_busy(), self._ours()
        return self

    def __exit__(self, *exc: object) -> None:
        jiffies = self._cpu_busy() - self.b0 - (self._ours() - self.o0)
        self.share = max(0.0, jiffies / os.sysconf("SC_CLK_TCK") / (time.perf_counter() - self.t0))
