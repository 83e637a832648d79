"""`lfr-evaluate`: a pre-deployment trial offline, the way NPL tested the Met's system: footage of volunteers
walking past, a test watchlist, and what the unit would have alerted.

    lfr-evaluate (--frames DIR | --video FILE) --watchlist DIR --fps N [--threshold T | --false-alerts "1 in N"]
                 --json OUT [--config UNIT_CONFIG]

The watchlist DIR holds photos and a `subjects.csv` (subject_id, category, photos separated by ';' relative to
DIR, reference), enrolled as `lfr-watchlist build` enrols them (the unit's models, photo mode). The footage
goes through the unit's own code: its pipeline, its worker (tracker, matcher, cooldowns) from `lfr_edge`,
with the unit config's sections (default: the built-in ones). Frame times are frame index / fps.

It writes one JSON file: `alerts` ({subject, score, frame, time}), `faces_seen`, `tracks`, `frame_ms_median`,
`frame_ms_p99` (and the run's frames, threshold, model id and list size), and prints a summary. No face data
goes anywhere: frames, crops and embeddings stay in memory, and the alerts' pictures are dropped unseen.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lfr_contracts.alerts import Alert
from lfr_contracts.audit_events import AuditEvent
from lfr_contracts.bundle import BundleHeader, SubjectEntry
from lfr_contracts.calibration import CalibrationError, parse_rate
from lfr_contracts.camera import Frame
from lfr_contracts.errors import ConfigError
from lfr_edge.alerts.channel import UnitState
from lfr_edge.models import ModelError
from lfr_edge.vision.image import ImageError
from lfr_edge.watchlist.store import SubjectRecord, WatchlistStore

CAMERA = "evaluate"
FRAME_SUFFIXES = {".png", ".jpg", ".jpeg"}
DEFAULT_FALSE_ALERTS = "1 in 6000"  # NPL's measured figure for the Met's deployments


class EvaluateError(Exception):
    """A bad argument or input; the message says which."""


class Discard:
    """The alert channel and audit sink of a trial: the decisions are what is counted; pictures go nowhere."""

    name = "evaluate"

    def deliver(self, alert: Alert) -> None:
        """Dropped: the trial records the worker's decisions, never the alert's pictures."""

    def show_state(self, state: UnitState) -> None:
        """Nothing to show."""

    def append(self, event: AuditEvent) -> object:
        return None


@dataclass(frozen=True)
class TrialAlert:
    subject: str
    score: float
    frame: int
    time: float


def frames_from_dir(folder: Path, fps: float) -> Iterator[Frame]:
    """Every image of the folder, in name order."""
    from lfr_tools.photos.image import read_image

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not paths:
        raise EvaluateError(f"--frames {folder}: no .png or .jpg frames in it")
    for index, path in enumerate(paths):
        yield Frame(CAMERA, index, index / fps, read_image(path))


def frames_from_video(path: Path, fps: float) -> Iterator[Frame]:
    import cv2

    if not path.is_file():
        raise EvaluateError(f"--video {path}: no such file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise EvaluateError(f"--video {path}: OpenCV cannot open it (codec or format)")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(CAMERA, index, index / fps, np.ascontiguousarray(bgr[:, :, ::-1]))
            bgr.fill(0)
            index += 1
        if index == 0:
            raise EvaluateError(f"--video {path}: no frame could be read")
    finally:
        capture.release()


def held_watchlist(entries: list[SubjectEntry], threshold: float, model_id: str) -> WatchlistStore:
    """The enrolled subjects as the unit holds a list (in memory; never sealed, never written)."""
    now = time.time()
    matrix = np.concatenate([e.embeddings for e in entries]).astype(np.float32)
    rows = np.concatenate([np.full(len(e.embeddings), i, np.int32) for i, e in enumerate(entries)])
    header = BundleHeader(
        deployment="evaluate",
        unit=CAMERA,
        version=1,
        issued_at=now,
        valid_from=now - 60,
        valid_until=now + 10 * 365 * 86400,
        threshold=threshold,
        model_id=model_id,
        subjects=len(entries),
        dim=matrix.shape[1],
        body_bytes=0,
        body_sha256="",
    )
    records = [SubjectRecord(e.id, e.category, e.reference, e.photo_jpeg) for e in entries]
    try:
        return WatchlistStore(header, matrix, rows, records)
    finally:
        matrix.fill(0)


def run_trial(args: argparse.Namespace) -> dict[str, Any]:
    from lfr_edge.config import load_config_or_defaults
    from lfr_edge.daemon.alerting import Alerter
    from lfr_edge.daemon.worker import PipelineWorker
    from lfr_edge.vision.pipeline import build_pipeline
    from lfr_tools.command_centre.cli import CliError, choose_threshold, enrol_subjects, read_subjects
    from lfr_tools.command_centre.enrol import PipelineEnroller

    cfg = load_config_or_defaults(args.config)
    pipeline = build_pipeline(cfg)
    try:
        rows = read_subjects(args.watchlist / "subjects.csv")
        entries, problems = enrol_subjects(rows, args.watchlist, PipelineEnroller(pipeline), skip_unusable=True)
        for line in problems:
            print(f"unusable: {line}", file=sys.stderr)
        if not entries:
            raise EvaluateError(f"{args.watchlist}: no subject could be enrolled")
        threshold = choose_threshold(args, cfg.models.dir, pipeline.model_id, entries)
    except CliError as exc:
        raise EvaluateError(str(exc)) from exc
    store = held_watchlist(entries, threshold, pipeline.model_id)
    for entry in entries:
        entry.embeddings.fill(0)
    discard = Discard()
    worker = PipelineWorker(
        pipeline,
        [CAMERA],
        cfg.track,
        cfg.match,
        lambda: store,
        Alerter(CAMERA, [discard], discard),
        embed_cfg=cfg.embed,
    )
    frames = frames_from_video(args.video, args.fps) if args.video else frames_from_dir(args.frames, args.fps)
    alerts: list[TrialAlert] = []
    frame_ms: list[float] = []
    try:
        for frame in frames:
            started = time.perf_counter()
            decisions = worker.process([frame])
            frame_ms.append((time.perf_counter() - started) * 1e3)
            alerts += [
                TrialAlert(d.subject_id, round(d.score, 4), frame.index, round(frame.timestamp, 3)) for d in decisions
            ]
        worker.end_all_tracks()
    finally:
        store.wipe()
    if not frame_ms:
        raise EvaluateError("no frames to evaluate")
    return {
        "alerts": [a.__dict__ for a in alerts],
        "faces_seen": worker.stats.faces_seen,
        "tracks": worker.stats.tracks_started,
        "frame_ms_median": round(statistics.median(frame_ms), 2),
        "frame_ms_p99": round(float(np.percentile(frame_ms, 99)), 2),
        "frames": len(frame_ms),
        "threshold": threshold,
        "model_id": pipeline.model_id,
        "subjects": len(entries),
    }


def summary(result: dict[str, Any], fps: float) -> list[str]:
    lines = [
        f"frames: {result['frames']} ({result['frames'] / fps:.1f} s at {fps:g} fps); per frame median "
        f"{result['frame_ms_median']:.1f} ms, p99 {result['frame_ms_p99']:.1f} ms",
        f"faces seen: {result['faces_seen']}, tracks (people): {result['tracks']}",
        f"watchlist: {result['subjects']} subjects, threshold {result['threshold']:g} ({result['model_id']})",
        f"alerts: {len(result['alerts'])} ({len({a['subject'] for a in result['alerts']})} of {result['subjects']} "
        "listed subjects alerted)",
    ]
    lines += [
        f"  {a['subject']} at {a['time']:.2f} s (frame {a['frame']}), score {a['score']:.3f}" for a in result["alerts"]
    ]
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfr-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--frames", type=Path, help="a folder of frames (.png, .jpg), in name order")
    source.add_argument("--video", type=Path, help="a video file OpenCV reads")
    parser.add_argument("--watchlist", type=Path, required=True, help="photos and subjects.csv")
    parser.add_argument("--fps", type=_positive, required=True, help="the footage's frame rate (frame times)")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, default=None, help="a cosine threshold")
    rule.add_argument(
        "--false-alerts",
        type=_rate,
        default=None,
        metavar='"1 in N"',
        help=f"false alerts per passer-by: the threshold for the list's size (default {DEFAULT_FALSE_ALERTS!r})",
    )
    parser.add_argument("--json", type=Path, required=True, help="the results file (no face data in it)")
    parser.add_argument("--config", type=Path, default=None, help="a unit config (models, vision, track, match)")
    return parser


def _positive(value: str) -> float:
    try:
        fps = float(value)
    except ValueError:
        fps = 0.0
    if not 0 < fps <= 1000:
        raise argparse.ArgumentTypeError(f"{value!r}: frames per second between 0 and 1000")
    return fps


def _rate(value: str) -> float:
    try:
        return parse_rate(value)
    except CalibrationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threshold is None and args.false_alerts is None:
        args.false_alerts = parse_rate(DEFAULT_FALSE_ALERTS)
    if args.threshold is not None and not 0 < args.threshold <= 1:
        print(f"lfr-evaluate: --threshold {args.threshold}: a cosine similarity in (0, 1]", file=sys.stderr)
        return 2
    try:
        result = run_trial(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    except (EvaluateError, ConfigError, ModelError, ImageError, OSError) as exc:
        print(f"lfr-evaluate: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary(result, args.fps)))
    print(f"wrote {args.json} (counts, scores and subject ids only: no face data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
