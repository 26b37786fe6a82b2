"""The full secserver exchange for the benchmark: TSA, provider and consumer nodes.

Filled in once ``secserver serve`` and ``secserver demo --dir`` exist.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench_procs import Child, Processes


class ExchangeUnavailable(Exception):
    """The exchange cannot be started here; the message says why."""


@dataclass
class Exchange:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    processes: dict[str, Child] = field(default_factory=dict)


def start_exchange(procs: Processes, stack: contextlib.ExitStack, workdir: Path, db: str,
                   backend_url: str, cpu_prefix: list[str],
                   log: Callable[[str], None]) -> Exchange:
    if importlib.util.find_spec("secserver.cli.serve") is None:
        raise ExchangeUnavailable("`secserver serve` is not implemented yet")
    raise ExchangeUnavailable("exchange set-up not written yet")
