"""The processes of a scenario and what they use: CPU and memory from /proc, JIT threads, the machine's load."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, stat_path: str | None = None) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), or None; of a thread with its stat path."""
    try:
        stat = Path(stat_path or f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15 of stat


def memory_mb(pid: int) -> dict[str, float | None]:
    """Peak (VmHWM) and current (VmRSS) resident memory of a live process in MB (Linux /proc)."""
    found: dict[str, float | None] = {"peak_rss_mb": None, "rss_mb": None}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found["peak_rss_mb" if name == "VmHWM" else "rss_mb"] = round(int(value.split()[0]) / 1024, 1)
    return found


def machine_busy_seconds() -> float | None:
    """CPU seconds every CPU of the machine spent busy since boot (Linux /proc/stat), or None."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def jit_cpu_seconds(pid: int, seen: dict[str, float]) -> float | None:
    """CPU seconds of a JVM's JIT compiler threads (C1, C2) so far, or None when it has none.

    ``seen`` keeps each thread's last figure, so a compiler thread the JVM has since removed
    still counts (one that came and went between two calls does not: then it is a lower bound).
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            if not Path(f"/proc/{pid}/task/{tid}/comm").read_text().startswith(("C1 Compiler", "C2 Compiler")):
                continue
        except OSError:
            continue
        used = cpu_seconds(pid, f"/proc/{pid}/task/{tid}/stat")
        if used is not None:
            seen[tid] = used
    return round(sum(seen.values()), 3) if seen else None


class Meter:
    """CPU of a phase: of our processes (and this one), and of the whole machine, to see interference.

    ``foreign_cpu_seconds`` is the machine's busy CPU minus that of the broker, the workers (or
    relay) and the benchmark itself: other work on the machine competing with the scenario.
    """

    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes

    def start(self, label: str) -> None:
        for process in self.processes:
            process.mark(f"{label}_start")
        self._self = cpu_seconds(os.getpid())
        self._machine = machine_busy_seconds()
        self._wall = time.monotonic()

    def stop(self, label: str) -> dict[str, float | None]:
        for process in self.processes:
            process.mark(f"{label}_end")
        wall = time.monotonic() - self._wall
        me, machine = cpu_seconds(os.getpid()), machine_busy_seconds()
        ours = [p.cpu_between(f"{label}_start", f"{label}_end") for p in self.processes]
        if machine is None or self._machine is None or me is None or self._self is None or None in ours:
            return {"wall_seconds": round(wall, 3), "machine_busy_cpu_seconds": None, "benchmark_cpu_seconds": None,
                    "foreign_cpu_seconds": None, "foreign_cpu_share": None}  # fmt: skip
        busy = machine - self._machine
        foreign = max(0.0, busy - (me - self._self) - sum(ours))  # type: ignore[arg-type]
        return {
            "wall_seconds": round(wall, 3),
            "machine_busy_cpu_seconds": round(busy, 2),
            "benchmark_cpu_seconds": round(me - self._self, 2),
            "foreign_cpu_seconds": round(foreign, 2),
            "foreign_cpu_share": round(foreign / (wall * (os.cpu_count() or 1)), 3) if wall > 0 else None,
        }

    def dead(self) -> str | None:
        """Which of our processes has exited, if one has (e.g. stopped from outside)."""
        for process in self.processes:
            code = process.popen.poll()
            if code is not None:
                tail = process.log_tail(4000)
                return f"{process.name} (pid {process.pid}) exited with code {code} during the phase" + (
                    f"; log tail:\n{tail}" if tail else ""
                )
        return None


@dataclass
class Process:
    """A process of the scenario (worker, relay, broker) whose CPU and memory are measured."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None
    port: int | None = None
    jvm: bool = False  # a Java process: its JIT compiler threads' CPU is marked too
    cpu_marks: dict[str, float | None] = field(default_factory=dict)
    jit_marks: dict[str, float | None] = field(default_factory=dict)
    _jit_threads: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float | None] = field(default_factory=lambda: {"peak_rss_mb": None, "rss_mb": None})

    @property
    def pid(self) -> int:
        return self.popen.pid

    def mark(self, label: str) -> None:
        self.cpu_marks[label] = cpu_seconds(self.pid)
        if self.jvm:
            self.jit_marks[label] = jit_cpu_seconds(self.pid, self._jit_threads)

    def cpu_between(self, start: str, end: str) -> float | None:
        a, b = self.cpu_marks.get(start), self.cpu_marks.get(end)
        return None if a is None or b is None else round(b - a, 3)

    def figures(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "cpu_seconds": {
                "burst": self.cpu_between("burst_start", "burst_end"),
                "paced": self.cpu_between("paced_start", "paced_end"),
                "total": self.cpu_marks.get("end"),
            },
            **self.memory,
        }

    def jit_figures(self) -> dict[str, float | None] | None:
        """CPU seconds of the JIT compiler during each phase and in all; None when not a JVM."""
        if not self.jvm:
            return None

        def between(start: str, end: str) -> float | None:
            a, b = self.jit_marks.get(start), self.jit_marks.get(end)
            return None if a is None or b is None else round(b - a, 3)

        return {
            "burst": between("burst_start", "burst_end"),
            "paced": between("paced_start", "paced_end"),
            "total": self.jit_marks.get("end"),
        }

    def snapshot_memory(self) -> None:
        self.memory = memory_mb(self.pid)

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM this process (only this pid), then SIGKILL if it does not go."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
