"""Shared fixtures: the MQTT broker (tests/mqtt_fixtures.py) and the face corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mqtt_fixtures import broker  # noqa: F401  (a fixture, used by name)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The face corpus (env LFR_FACES, default ../shared/faces); skips when absent, unless
    LFR_REQUIRE_FACES=1, when a missing corpus fails the test."""
    path = Path(os.environ.get("LFR_FACES", REPO_ROOT.parent / "shared" / "faces"))
    if not (path / "manifest.csv").exists():
        message = f"face corpus not found at {path}: set LFR_FACES to the folder holding manifest.csv"
        if os.environ.get("LFR_REQUIRE_FACES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
