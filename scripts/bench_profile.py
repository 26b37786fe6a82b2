"""Profiling for the benchmark: py-spy on the server processes during one extra run.

``python scripts/bench.py --profile DIR`` adds, after the measured runs, one unmeasured run
per exchange target (smallest size, throughput concurrency) while ``py-spy record``
samples the consumer and provider nodes (``--nonblocking``, on the load generator's CPU).
For each node it writes the collapsed stacks (``NAME.folded``, input for flamegraph tools
and speedscope) and ``NAME-top.txt``: the functions with the most samples, on their own
(self) and including what they call (inclusive), leaving out worker threads that merely
wait for work. The summary is pure and unit-tested.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProfileTop:
    samples: int
    self_top: list[tuple[str, int]]
    inclusive_top: list[tuple[str, int]]


def _line_of(module: str, needle: str) -> int | None:
    """The line number of the first line of ``module``'s source containing ``needle``."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    try:
        for number, text in enumerate(Path(spec.origin).read_text().splitlines(), 1):
            if needle in text:
                return number
    except OSError:
        return None
    return None


def idle_frames() -> frozenset[str]:
    """Leaf frames that are a worker thread blocked waiting for work, not CPU.

    py-spy's ``--nonblocking`` mode cannot tell these waits from work, so they are dropped.
    """
    frames = set()
    for module, function, path, needle in (
            ("aiosqlite.core", "_connection_worker_thread", "aiosqlite/core.py", "tx.get()"),
            ("concurrent.futures.thread", "_worker", "concurrent/futures/thread.py",
             "work_queue.get(block=True)"),
            ("secserver.db.committer", "CommitThread._serve", "secserver/db/committer.py",
             "self._jobs.get()")):
        line = _line_of(module, needle)
        if line is not None:
            frames.add(f"{function} ({path}:{line})")
    return frozenset(frames)


def parse_folded(lines: Iterable[str], limit: int = 25,
                 idle: frozenset[str] = frozenset()) -> ProfileTop:
    """Top functions of collapsed stacks (``frame;frame;frame COUNT`` per line).

    Stacks whose leaf frame is in ``idle`` are not counted.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.strip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames or frames[-1] in idle:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return ProfileTop(total, own.most_common(limit), inclusive.most_common(limit))


def render_top(name: str, top: ProfileTop) -> str:
    lines = [f"{name}: {top.samples} samples"]
    for title, entries in (("self", top.self_top), ("inclusive", top.inclusive_top)):
        lines.append(f"  top {title}:")
        for frame, count in entries:
            share = count / top.samples if top.samples else 0.0
            lines.append(f"    {share:6.1%}  {frame}")
    return "\n".join(lines)


def pyspy_available() -> bool:
    return shutil.which("py-spy") is not None


def start_recorders(pids: dict[str, int], out_dir: Path, duration: float,
                    cpu_prefix: Sequence[str]) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """Start one ``py-spy record`` per process (raw collapsed output, non-blocking)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    recorders = []
    for name, pid in pids.items():
        command = [*cpu_prefix, "py-spy", "record", "--nonblocking", "--format", "raw",
                   "--rate", "250", "--duration", str(max(1, round(duration))),
                   "--pid", str(pid), "--output", str(out_dir / f"{name}.folded")]
        recorders.append((name, subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.PIPE)))
    return recorders


def finish_recorders(recorders: list[tuple[str, subprocess.Popen[bytes]]], out_dir: Path,
                     timeout: float) -> list[str]:
    """Wait for the recorders; write and return each process's top summary."""
    summaries = []
    for name, process in recorders:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        folded = out_dir / f"{name}.folded"
        if not folded.exists():
            summaries.append(f"{name}: py-spy wrote nothing: "
                             f"{stderr.decode(errors='replace').strip()[-500:]}")
            continue
        text = render_top(name, parse_folded(folded.read_text().splitlines(),
                                             idle=idle_frames()))
        (out_dir / f"{name}-top.txt").write_text(text + "\n")
        summaries.append(text)
    return summaries
