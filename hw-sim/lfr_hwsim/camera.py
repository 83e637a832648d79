"""The simulator camera: a FrameSource that renders a scene plan, selected by `source = "simulator"`.

Scene settings come from the camera's `options` table and are checked here, each error naming the
option. Faults are driven from outside the daemon's process through a small JSON control file
(`{"camera": "ok" | "stall" | "disconnect"}`) that `read()` re-checks with a cheap stat() at most every
0.1 s: a stall makes `read()` block, a disconnect makes `read()` and `open()` raise CameraError until
the file says "ok" again. Real-time pacing follows an absolute schedule (start + index / fps), so it
never drifts; frames the consumer was too slow for, or that fell in a stall, are skipped and counted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lfr_contracts.camera import CameraConfig, CameraError, EndOfStream, Frame, SourceStats, option, source_options
from lfr_contracts.errors import ConfigError
from lfr_contracts.settings import expand_path
from lfr_contracts.untrusted import excerpt
from lfr_hwsim.facelocate import LocatorUnavailable, default_locator
from lfr_hwsim.plan import PlanError, PlanRequest, ScenePlan, build_plan, list_identities, load_plan
from lfr_hwsim.scene import FrameTruth, SceneRenderer

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTROL_STATES = ("ok", "stall", "disconnect")
CONTROL_POLL_S = 0.1


def default_faces_dir() -> Path:
    """$LFR_FACES/wild, with LFR_FACES defaulting to ../shared/faces next to the repository."""
    root = os.environ.get("LFR_FACES") or str(REPO_ROOT.parent / "shared" / "faces")
    return Path(root) / "wild"


@dataclass(frozen=True)
class SimOptions:
    faces_dir: Path
    seed: int = 0
    duration_s: float = 60.0
    crowd: float = 3.0
    walkers: int = 0
    watchlisted: int | tuple[str, ...] = 0
    occluders: int = 1
    lighting: bool = True
    exposure: float = 0.3
    realtime: bool = True
    loop: bool = False
    plan_file: Path | None = None
    truth_file: Path | None = None
    control_file: Path | None = None
    detector_model: Path | None = None


# The simulator's `options`, declared beside it: docs/config.md lists them from here.
OPTIONS = {
    "faces_dir": option(str, "", "folder of labelled photos <identity>/<n>.jpg (default $LFR_FACES/wild)"),
    "seed": option(int, 0, "the same seed and options give the same scene", ge=0),
    "duration_s": option((int, float), 60.0, "scene length in seconds", ge=1e-3, le=86400),
    "crowd": option((int, float), 3.0, "mean number of people in frame", ge=1e-3, le=100),
    "walkers": option(int, 0, "total passers-by (0 = from crowd and duration)", ge=0, le=100_000),
    "watchlisted": option(
        (int, list), 0, "how many identities the demo watchlists (integer) or their names (list of strings)", ge=0
    ),
    "occluders": option(int, 1, "poles with a sign in the foreground", ge=0, le=20),
    "lighting": option(bool, True, "lighting changes over time"),
    "exposure": option(
        (int, float), 0.3, "shutter open time, a fraction of the frame interval (motion blur)", ge=0, le=1
    ),
    "realtime": option(bool, True, "pace frames at the camera's fps (true) or deliver as fast as possible (false)"),
    "loop": option(bool, False, "start the scene again at its end instead of ending the stream"),
    "plan_file": option(str, "", "a scene plan JSON written by `scene plan`; overrides the scene options above"),
    "truth_file": option(str, "", "append the ground truth of every delivered frame to this JSON-lines file"),
    "control_file": option(str, "", 'fault-injection control file: {"camera": "ok" | "stall" | "disconnect"}'),
    "detector_model": option(str, "", "BlazeFace .tflite used to find faces in the photos when building the plan"),
}
_PATHS = ("faces_dir", "plan_file", "truth_file", "control_file", "detector_model")


def parse_options(camera: str, options: dict[str, Any]) -> SimOptions:
    """Check every option's name, type and range; the error names the option and what it accepts."""

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"cameras[{camera}].options.{key}: {why} ({OPTIONS[key].help})")

    checked = source_options(camera, options, OPTIONS)
    paths: dict[str, Path | None] = {}
    for key in _PATHS:
        if key in options and not checked[key]:
            raise fail(key, "an empty path")
        paths[key] = expand_path(f"cameras[{camera}].options.{key}", checked[key]) if checked[key] else None

    watch = checked["watchlisted"]
    if isinstance(watch, list) and all(isinstance(i, str) and i for i in watch):
        watchlisted: int | tuple[str, ...] = tuple(watch)
    elif isinstance(watch, int):
        watchlisted = watch
    else:
        raise fail("watchlisted", f"{excerpt(watch)} is neither a count nor a list of identities")

    opts = SimOptions(
        faces_dir=paths["faces_dir"] or default_faces_dir(),
        seed=checked["seed"],
        duration_s=float(checked["duration_s"]),
        crowd=float(checked["crowd"]),
        walkers=checked["walkers"],
        watchlisted=watchlisted,
        occluders=checked["occluders"],
        lighting=checked["lighting"],
        exposure=float(checked["exposure"]),
        realtime=checked["realtime"],
        loop=checked["loop"],
        plan_file=paths["plan_file"],
        truth_file=paths["truth_file"],
        control_file=paths["control_file"],
        detector_model=paths["detector_model"],
    )
    if opts.plan_file is not None and not opts.plan_file.is_file():
        raise fail("plan_file", f"{opts.plan_file} does not exist")
    if opts.detector_model is not None and not opts.detector_model.is_file():
        raise fail("detector_model", f"{opts.detector_model} does not exist")
    return opts


def plan_for(cfg: CameraConfig, opts: SimOptions) -> ScenePlan:
    """The plan file's scene, or one built from the options; errors name the option at fault."""
    where = f"cameras[{cfg.name}].options"
    if opts.plan_file is not None:
        try:
            plan = load_plan(opts.plan_file)
        except PlanError as exc:
            raise ConfigError(f"{where}.plan_file: {exc}") from exc
        if (plan.width, plan.height, plan.fps) != (cfg.width, cfg.height, cfg.fps):
            raise ConfigError(
                f"{where}.plan_file: plan is {plan.width}x{plan.height} at {plan.fps} fps, the camera "
                f"{cfg.width}x{cfg.height} at {cfg.fps} fps"
            )
        return plan
    try:
        list_identities(opts.faces_dir)
    except PlanError as exc:
        raise ConfigError(f"{where}.faces_dir: {exc}") from exc
    try:
        locator = default_locator(opts.detector_model)
    except LocatorUnavailable as exc:
        raise ConfigError(f"{where}.detector_model: {exc}") from exc
    request = PlanRequest(
        faces_dir=opts.faces_dir,
        seed=opts.seed,
        width=cfg.width,
        height=cfg.height,
        fps=cfg.fps,
        duration_s=opts.duration_s,
        crowd=opts.crowd,
        walkers=opts.walkers,
        watchlisted=opts.watchlisted,
        occluders=opts.occluders,
        lighting=opts.lighting,
        exposure=opts.exposure,
    )
    try:
        return build_plan(request, locator)
    except PlanError as exc:
        key = "watchlisted" if "watchlisted" in str(exc) else "faces_dir"
        raise ConfigError(f"{where}.{key}: {exc}") from exc


def write_control(path: Path, state: str) -> None:
    """Set the simulated camera's fault state (for the fault-injection script); atomic replace."""
    if state not in CONTROL_STATES:
        raise ValueError(f"camera control state {state!r} is not one of {', '.join(CONTROL_STATES)}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"camera": state}))
    os.replace(tmp, path)


class ControlFile:
    """Reads the control file only when it changed (inode, mtime, size); bad content keeps the old state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = "ok"
        self._seen: tuple[int, int, int] | None = None

    def poll(self) -> str:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.state, self._seen = "ok", None
            return self.state
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._seen:
            self._seen = key
            try:
                state = json.loads(self.path.read_text())["camera"]
                if state not in CONTROL_STATES:
                    raise ValueError(f"state {state!r} is not one of {', '.join(CONTROL_STATES)}")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("camera control file %s ignored, keeping %r: %s", self.path, self.state, exc)
            else:
                if state != self.state:
                    log.info("camera control file %s: %s", self.path, state)
                self.state = state
        return self.state


class SimulatorSource:
    """Renders the plan's frames on demand, paced in real time or as fast as the reader takes them."""

    def __init__(self, cfg: CameraConfig, opts: SimOptions, plan: ScenePlan) -> None:
        self.name = cfg.name
        self.stats = SourceStats()
        self.opts = opts
        self.plan = plan
        self.renderer = SceneRenderer(plan)
        self.interval = 1.0 / plan.fps
        self._control = ControlFile(opts.control_file) if opts.control_file else None
        self._polled_at = -math.inf
        self._closed = threading.Event()
        self._open = False
        self._opened_before = False
        self._t0: float | None = None
        self._next = 0
        self._truth: IO[str] | None = None

    def open(self) -> None:
        if self._fault_state(force=True) == "disconnect":
            raise CameraError(f"camera {self.name}: simulated disconnect (control file says so)")
        if self._opened_before:
            self.stats.reconnects += 1
        self._opened_before = True
        self._closed.clear()
        if self._t0 is None:
            self._t0 = time.monotonic()
        if self.opts.truth_file is not None and self._truth is None:
            self._truth = self.opts.truth_file.open("a")
        self._open = True

    def read(self) -> Frame:
        if not self._open or self._t0 is None:
            raise CameraError(f"camera {self.name} is not open")
        state = self._fault_state(force=False)
        while state == "stall":
            if self._closed.wait(CONTROL_POLL_S):
                raise CameraError(f"camera {self.name} was closed while stalled")
            state = self._fault_state(force=True)
        if state == "disconnect":
            self._open = False
            raise CameraError(f"camera {self.name}: simulated disconnect (control file says so)")

        gap = 0
        if self.opts.realtime:  # skip the frames whose time has passed (slow reader, stall)
            due_index = math.floor((time.monotonic() - self._t0) / self.interval)
            if due_index > self._next:
                gap, self._next = due_index - self._next, due_index
        index = self._next
        if index >= self.renderer.frames and not self.opts.loop:
            raise EndOfStream(f"camera {self.name}: the scene's {self.renderer.frames} frames are over")
        image, truth = self.renderer.render(index % self.renderer.frames)
        if self.opts.realtime:
            delay = self._t0 + index * self.interval - time.monotonic()
            if delay > 0 and self._closed.wait(delay):
                raise CameraError(f"camera {self.name} was closed")
        timestamp = time.monotonic()
        self._next = index + 1
        self.stats.record(timestamp, self.interval if self.opts.realtime else 0.0, gap)
        if self._truth is not None:
            self._truth.write(FrameTruth(index, truth.t, truth.faces).to_json() + "\n")
            self._truth.flush()
        return Frame(self.name, index, timestamp, image)

    def close(self) -> None:
        self._open = False
        self._closed.set()
        if self._truth is not None:
            self._truth.close()
            self._truth = None

    def describe(self) -> str:
        p = self.plan
        pace = f"real time at {p.fps:g} fps" if self.opts.realtime else "as fast as possible"
        return (
            f"simulator {self.name}: {p.width}x{p.height}, {len(p.walkers)} passers-by "
            f"over {p.duration_s:g} s (seed {p.seed}, {len(p.watchlisted)} watchlisted), {pace}, "
            f"faces from {p.faces_dir}"
        )

    def _fault_state(self, force: bool) -> str:
        if self._control is None:
            return "ok"
        now = time.monotonic()
        if force or now - self._polled_at >= CONTROL_POLL_S:
            self._polled_at = now
            return self._control.poll()
        return self._control.state


def create(cfg: CameraConfig) -> SimulatorSource:
    """Build the simulator camera from its config (options checked, plan built or loaded)."""
    opts = parse_options(cfg.name, cfg.options)
    plan = plan_for(cfg, opts)
    try:
        return SimulatorSource(cfg, opts, plan)
    except PlanError as exc:
        raise ConfigError(f"cameras[{cfg.name}].options.faces_dir: {exc}") from exc
