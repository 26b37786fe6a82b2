"""The profile summary of scripts/bench_profile.py: top self and inclusive frames."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))

from bench_profile import parse_folded, render_top


def test_parse_folded_counts_self_and_inclusive() -> None:
    lines = ["main;handle;sign 30", "main;handle;verify 50", "main;loop 20",
             "garbage line", "main;handle;handle 10", ""]
    top = parse_folded(lines)
    assert top.samples == 110
    assert top.self_top[0] == ("verify", 50)
    assert dict(top.self_top) == {"verify": 50, "sign": 30, "loop": 20, "handle": 10}
    inclusive = dict(top.inclusive_top)
    assert inclusive["main"] == 110
    assert inclusive["handle"] == 90  # counted once per stack, even when recursive


def test_render_top_shares() -> None:
    text = render_top("node", parse_folded(["a;b 3", "a 1"], limit=1))
    assert text.splitlines()[0] == "node: 4 samples"
    assert "75.0%  b" in text
    assert " 100.0%  a" in text


def test_idle_leaf_frames_are_not_counted() -> None:
    idle = frozenset({"wait (q.py:5)"})
    top = parse_folded(["t;wait (q.py:5) 40", "t;work (q.py:9) 10"], idle=idle)
    assert top.samples == 10
    assert dict(top.self_top) == {"work (q.py:9)": 10}


def test_idle_frames_name_real_source_lines() -> None:
    from bench_profile import idle_frames

    frames = idle_frames()
    assert any(f.startswith("_connection_worker_thread (aiosqlite/core.py:") for f in frames)
    assert any(f.startswith("_worker (concurrent/futures/thread.py:") for f in frames)
