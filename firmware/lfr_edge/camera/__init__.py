"""Camera sources, one file each, chosen by `cameras[].source` in the config; imported only when selected.

Sources are found in the `lfr_edge.camera_sources` entry-point group (name -> "module:function" building the
source from its `CameraConfig`). The van's own sources are registered by this distribution; a plugin (the
simulator) registers its own, so the van package never names it.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from lfr_contracts.camera import CameraConfig, CameraUnavailable, FrameSource
from lfr_contracts.untrusted import excerpt

ENTRY_POINT_GROUP = "lfr_edge.camera_sources"


def available_sources() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def create_source(cfg: CameraConfig) -> FrameSource:
    sources = available_sources()
    entry = sources.get(cfg.source)
    if entry is None:
        known = ", ".join(sorted(sources)) or "none: is lfr-edge installed (pip install -e .)?"
        raise CameraUnavailable(f"cameras[{cfg.name}].source {excerpt(cfg.source)} is unknown (known: {known})")
    try:
        factory = entry.load()
    except ImportError as exc:
        raise CameraUnavailable(f"camera source {cfg.source!r} cannot be imported: {exc}") from exc
    source: FrameSource = factory(cfg)
    return source
