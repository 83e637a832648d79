"""Camera sources, one file each, chosen by `cameras[].source` in the config; imported only when selected."""

from __future__ import annotations

import importlib

from lfr_edge.camera.base import CameraError, CameraUnavailable, EndOfStream, Frame, FrameSource, SourceStats
from lfr_edge.config import CameraConfig

# config key -> "module:function" that builds the source from its CameraConfig
SOURCES: dict[str, str] = {
    "simulator": "lfr_hwsim.camera:create",
    "replay": "lfr_edge.camera.replay:create",
    "opencv": "lfr_edge.camera.opencv:create",
    "picamera2": "lfr_edge.camera.picamera2:create",
    "jetson": "lfr_edge.camera.jetson:create",
}


def create_source(cfg: CameraConfig) -> FrameSource:
    target = SOURCES.get(cfg.source)
    if target is None:
        raise CameraUnavailable(f"cameras[{cfg.name}].source {cfg.source!r} is unknown (known: {', '.join(SOURCES)})")
    module_name, func = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CameraUnavailable(f"camera source {cfg.source!r} cannot be imported: {exc}") from exc
    source: FrameSource = getattr(module, func)(cfg)
    return source


__all__ = [
    "SOURCES",
    "CameraError",
    "CameraUnavailable",
    "EndOfStream",
    "Frame",
    "FrameSource",
    "SourceStats",
    "create_source",
]
