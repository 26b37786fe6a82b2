"""Fixtures of the log tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from secserver.signing.pki import init_dev_pki


@pytest.fixture(scope="session")
def audit_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A development PKI (CA, node log keys, TSA) shared by the log tests."""
    directory = tmp_path_factory.mktemp("audit-pki")
    init_dev_pki(directory)
    return directory
