"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The face corpus ($LFR_FACES, default ../shared/faces); skips without it.

    With LFR_REQUIRE_FACES=1 (CI) a missing corpus fails instead."""
    root = Path(os.environ.get("LFR_FACES") or REPO_ROOT.parent / "shared" / "faces")
    if not (root / "wild").is_dir():
        message = f"face corpus not found at {root}: set LFR_FACES to a folder holding wild/ and aligned/"
        if os.environ.get("LFR_REQUIRE_FACES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root
