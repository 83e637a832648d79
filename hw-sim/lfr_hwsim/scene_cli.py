"""`lfr-hwsim scene ...`: plan a scene, render it to a video or PNGs with its ground truth, preview a frame.

scene plan    --faces DIR --seed 3 --duration 60 --watchlisted 4 --out plan.json
scene render  --plan plan.json --video street.mp4 --truth truth.jsonl   (or --frames DIR)
scene preview --plan plan.json --time 12.5 --out frame.png --boxes
scene bench   --plan plan.json --frames 300          (render speed, one thread: median and p99)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lfr_hwsim.camera import default_faces_dir
from lfr_hwsim.facelocate import LocatorUnavailable, default_locator
from lfr_hwsim.plan import PlanError, PlanRequest, ScenePlan, build_plan, load_plan
from lfr_hwsim.scene import FrameTruth, Image, SceneRenderer, write_truth


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plan", type=Path, help="a plan JSON written by `scene plan` (the options below are ignored)"
    )
    p.add_argument("--faces", type=Path, default=None, help="labelled photos <identity>/<n>.jpg")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--duration", type=float, default=60.0, help="seconds")
    p.add_argument("--crowd", type=float, default=3.0, help="mean number of people in frame")
    p.add_argument("--walkers", type=int, default=0, help="total passers-by (0: from --crowd)")
    p.add_argument("--watchlisted", type=int, default=0, help="identities to put on the demo's watchlist")
    p.add_argument("--occluders", type=int, default=1, help="poles with a sign in the foreground")
    p.add_argument("--no-lighting", action="store_true", help="keep the lighting constant")
    p.add_argument("--exposure", type=float, default=0.3, help="shutter fraction of the frame interval")
    p.add_argument("--detector-model", type=Path, default=None, help="BlazeFace .tflite to find faces")


def _get_plan(args: argparse.Namespace) -> ScenePlan:
    if args.plan is not None:
        return load_plan(args.plan)
    request = PlanRequest(
        faces_dir=args.faces or default_faces_dir(),
        seed=args.seed,
        width=args.width,
        height=args.height,
        fps=args.fps,
        duration_s=args.duration,
        crowd=args.crowd,
        walkers=args.walkers,
        watchlisted=args.watchlisted,
        occluders=args.occluders,
        lighting=not args.no_lighting,
        exposure=args.exposure,
    )
    return build_plan(request, default_locator(args.detector_model))


def draw_truth(image: Image, truth: FrameTruth) -> Image:
    """A copy of the frame with each true face box and its identity (green watchlisted, yellow not)."""
    out = image.copy()
    for f in truth.faces:
        x1, y1, x2, y2 = (round(v) for v in f.box)
        colour = (40, 220, 40) if f.watchlisted else (240, 220, 40)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        label = f"{f.identity}#{f.walker} {f.width:.0f}px vis {f.visible:.2f} blur {f.blur_px:.0f}"
        cv2.putText(out, label, (x1, max(12, y1 - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return out


def summarise(plan: ScenePlan, truths: list[FrameTruth]) -> list[str]:
    faces = [f for t in truths for f in t.faces]
    widths = [f.width for f in faces]
    lines = [
        f"frames {len(truths)} ({plan.width}x{plan.height} at {plan.fps:g} fps, {plan.duration_s:g} s, "
        f"seed {plan.seed})",
        f"passers-by {len(plan.walkers)} ({len({w.identity for w in plan.walkers})} identities), "
        f"watchlisted {', '.join(plan.watchlisted) or 'none'}",
        f"unusable photos (no face found) {len(plan.unusable_photos)}",
    ]
    if faces:
        per_frame = [len(t.faces) for t in truths]
        lines += [
            f"faces drawn {len(faces)}; per frame mean {np.mean(per_frame):.1f}, max {max(per_frame)}",
            f"face width px min {min(widths):.0f}, median {statistics.median(widths):.0f}, "
            f"max {max(widths):.0f}",
            f"partly hidden (visible < 0.9) {sum(f.visible < 0.9 for f in faces)}, "
            f"mostly hidden (< 0.5) {sum(f.visible < 0.5 for f in faces)}",
            f"motion blur px median {statistics.median(f.blur_px for f in faces):.1f}, "
            f"max {max(f.blur_px for f in faces):.1f}",
        ]
    return lines


def _render(args: argparse.Namespace) -> int:
    plan = _get_plan(args)
    renderer = SceneRenderer(plan)
    writer = None
    if args.video is not None:
        writer = cv2.VideoWriter(
            str(args.video), cv2.VideoWriter.fourcc(*"mp4v"), plan.fps, (plan.width, plan.height)
        )
        if not writer.isOpened():
            print(
                f"cannot write video {args.video} (no encoder for mp4v here?); use --frames DIR",
                file=sys.stderr,
            )
            return 1
    if args.frames is not None:
        args.frames.mkdir(parents=True, exist_ok=True)
    truths = []
    started = time.perf_counter()
    for i in range(plan.frames):
        image, truth = renderer.render(i)
        truths.append(truth)
        if writer is not None:
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if args.frames is not None:
            cv2.imwrite(str(args.frames / f"{i:06d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    elapsed = time.perf_counter() - started
    if writer is not None:
        writer.release()
    if args.truth is not None:
        args.truth.unlink(missing_ok=True)
        write_truth(args.truth, truths)
    print("\n".join(summarise(plan, truths)))
    print(f"rendered and written in {elapsed:.1f} s ({plan.frames / elapsed:.0f} fps)")
    return 0


def _preview(args: argparse.Namespace) -> int:
    plan = _get_plan(args)
    renderer = SceneRenderer(plan)
    index = args.frame if args.frame is not None else round(args.time * plan.fps)
    image, truth = renderer.render(index)
    if args.boxes:
        image = draw_truth(image, truth)
    cv2.imwrite(str(args.out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    print(f"frame {index} (t {truth.t:.2f} s) -> {args.out}")
    for f in truth.faces:
        print(
            f"  {f.identity} walker {f.walker}: box {[round(v) for v in f.box]}, {f.width:.0f} px, "
            f"visible {f.visible:.2f}, blur {f.blur_px:.1f} px{', watchlisted' if f.watchlisted else ''}"
        )
    return 0


def _bench(args: argparse.Namespace) -> int:
    cv2.setNumThreads(args.threads)
    plan = _get_plan(args)
    renderer = SceneRenderer(plan)
    times = []
    people = []
    for i in range(min(args.frames, plan.frames)):
        t0 = time.perf_counter()
        _, truth = renderer.render(i)
        times.append((time.perf_counter() - t0) * 1000)
        people.append(len(truth.faces))
    ms = np.array(times)
    print(
        f"scene render {plan.width}x{plan.height}, {len(times)} frames, "
        f"{np.mean(people):.1f} people per frame (max {max(people)}), "
        f"OpenCV threads {args.threads}: median {np.median(ms):.2f} ms, "
        f"p99 {np.percentile(ms, 99):.2f} ms, {1000 / np.median(ms):.0f} fps"
    )
    return 0


def _plan(args: argparse.Namespace) -> int:
    plan = _get_plan(args)
    plan.save(args.out)
    print(f"plan with {len(plan.walkers)} passers-by over {plan.duration_s:g} s -> {args.out}")
    return 0


def scene_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lfr-hwsim scene", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="draw a scene plan and save it as JSON")
    _plan_args(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=_plan)
    p = sub.add_parser("render", help="render every frame to a video and/or PNGs, with ground truth")
    _plan_args(p)
    p.add_argument("--video", type=Path)
    p.add_argument("--frames", type=Path, help="folder for one PNG per frame")
    p.add_argument("--truth", type=Path, help="ground truth as JSON lines (replaced)")
    p.set_defaults(run=_render)
    p = sub.add_parser("preview", help="render one frame to a PNG")
    _plan_args(p)
    p.add_argument("--time", type=float, default=5.0, help="seconds into the scene")
    p.add_argument("--frame", type=int, help="frame index (instead of --time)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--boxes", action="store_true", help="draw the ground-truth face boxes")
    p.set_defaults(run=_preview)
    p = sub.add_parser("bench", help="render speed: median and p99 ms per frame")
    _plan_args(p)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    p.set_defaults(run=_bench)
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (PlanError, LocatorUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(scene_main())
