"""The node's own note of its latest checkpoint, kept outside the database.

After each checkpoint the writer replaces ``<data_dir>/log-head-<node>.json`` with the
checkpoint's seq and hash. Someone who truncates the log in the database (deleting the
newest records, checkpoints and tokens included) leaves a chain that is consistent in
itself; ``audit verify`` compares it with this file and reports the truncation.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Anchor:
    node: str
    seq: int
    hash: bytes
    at: str


def anchor_path(data_dir: Path, node: str) -> Path:
    return data_dir / f"log-head-{re.sub(r'[^A-Za-z0-9.-]+', '_', node)}.json"


def write_anchor(path: Path, anchor: Anchor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"node": anchor.node, "seq": anchor.seq,
                               "hash": anchor.hash.hex(), "at": anchor.at}) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def read_anchor(path: Path) -> Anchor | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Anchor(str(data["node"]), int(data["seq"]), bytes.fromhex(data["hash"]),
                      str(data["at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
