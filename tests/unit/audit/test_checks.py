"""The verify shell: ranges cut at checkpoints, verified in parallel processes, merged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from audit_support import (
    db_rows,
    logged_node,
    pki_fixture,  # noqa: F401 (the pki fixture)
)

from secserver.audit import checks
from secserver.audit.checks import merge_reports, split_ranges, verify_node_log
from secserver.audit.verify import Problem, VerifyReport


def test_split_ranges_end_on_checkpoints() -> None:
    assert split_ranges(1, 100, [10, 20, 45, 60, 90], 2) == [(1, 60), (61, None)]
    assert split_ranges(1, 100, [30, 60, 90], 3) == [(1, 60), (61, 90), (91, None)]
    assert split_ranges(1, 100, [], 4) == [(1, None)]
    assert split_ranges(1, 100, [100], 2) == [(1, None)]


def report(first: int, last: int, *, problems: tuple[Problem, ...] = (),
           warnings: tuple[Problem, ...] = (), stamps: int = 1) -> VerifyReport:
    return VerifyReport("N", first, last, last - first + 1, 1, 1, stamps, 0, problems,
                        warnings)


def test_merge_reports() -> None:
    waiting = Problem("untimestamped", 50, 50, "checkpoint 50 not yet timestamped")
    tail = Problem("unanchored", 99, 100, "records 99..100 are not yet anchored")
    merged = merge_reports([report(1, 50, warnings=(waiting,)),
                            report(51, 100, warnings=(tail,))])
    assert (merged.first_seq, merged.last_seq, merged.records) == (1, 100, 100)
    assert [p.code for p in merged.problems] == ["timestamp"]  # a later range has tokens
    assert merged.warnings == (tail,)
    merged = merge_reports([report(1, 50), report(51, 100, warnings=(waiting,), stamps=0)])
    assert merged.ok and merged.warnings == (waiting,)


def test_parallel_ranges_find_what_one_process_finds(migrated_url: str, tmp_path: Path,
                                                     pki: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = logged_node(tmp_path / "node", migrated_url, pki, exchanges=30,
                         checkpoint_records=8)
    single = verify_node_log(config, workers=1)
    monkeypatch.setattr(checks, "PARALLEL_MIN_RECORDS", 10)
    monkeypatch.setattr(checks, "PARALLEL_MIN_SIGNED", 10)
    merged: list[int] = []

    def counting_merge(reports: list[VerifyReport]) -> VerifyReport:
        merged.append(len(reports))
        return merge_reports(reports)

    monkeypatch.setattr(checks, "merge_reports", counting_merge)
    parallel = verify_node_log(config, workers=2)
    assert merged == [2]
    assert single.ok and parallel.ok
    assert (parallel.records, parallel.messages, parallel.message_signatures) == \
        (single.records, single.messages, single.message_signatures)
    assert single.messages == single.message_signatures == 60
    db_rows(migrated_url, "DELETE FROM log_records WHERE seq = 50")
    single, parallel = verify_node_log(config, workers=1), verify_node_log(config, workers=2)
    assert [p.message for p in parallel.problems] == [p.message for p in single.problems] == [
        "records missing between 49 and 51 (record 50)"]
