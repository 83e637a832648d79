"""Shared fixtures: the face corpus, the built models, the unit's pipeline, the MQTT broker
(tests/mqtt_fixtures.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lfr_edge.config import Config
from mqtt_fixtures import broker  # noqa: F401  (a fixture, used by name)

REPO_ROOT = Path(__file__).resolve().parents[1]


def faces_root() -> Path:
    return Path(os.environ.get("LFR_FACES", REPO_ROOT.parent / "shared" / "faces"))


def require_faces() -> Path:
    """The face corpus, or skip (fail under CI, where LFR_REQUIRE_FACES=1) with how to point at one."""
    root = faces_root()
    if (root / "manifest.csv").is_file():
        return root
    message = (
        f"face corpus not found at {root}: set LFR_FACES to a folder with wild/<id>/*.jpg, "
        "aligned/<name>/*.png and manifest.csv (see ../shared/faces/README.md)"
    )
    if os.environ.get("LFR_REQUIRE_FACES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def faces() -> Path:
    return require_faces()


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return require_faces()


@pytest.fixture(scope="session")
def unit_config() -> Config:
    """Built-in defaults: models from the build cache (`make models`), LiteRT on the CPU."""
    return Config()


@pytest.fixture(scope="session")
def pipeline(unit_config: Config) -> Iterator[object]:
    from lfr_edge.models import ModelError
    from lfr_edge.vision.pipeline import build_pipeline

    try:
        yield build_pipeline(unit_config)
    except ModelError as exc:
        pytest.fail(f"{exc} (run `make models` first)")
