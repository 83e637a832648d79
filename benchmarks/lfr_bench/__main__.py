"""`python -m lfr_bench [--quick] [--parts ...]`: run the benchmark parts and write bench-results/."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lfr_bench import accuracy, crowd, detection, embedders, latency, memory, peer, perception, pipeline, scale
from lfr_bench.common import BenchContext, PartResult, machine_info, not_measured
from lfr_bench.frames import FrameSet, make_sprites, wild_photos
from lfr_bench.report import write_results
from lfr_bench.variants import VariantsUnavailable, bench_variants, build
from lfr_edge.config import REPO_ROOT, load_config_or_defaults

PARTS = (
    "perception", "detection", "crowd", "accuracy", "embedders", "peer", "scale", "pipeline", "latency", "memory"
)  # fmt: skip
T = TypeVar("T")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lfr_bench", description=__doc__)
    p.add_argument("--quick", nargs="?", const="1", default="0", help="quick mode (1/0; bare flag = 1)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench-results")
    p.add_argument("--config", type=Path, default=None, help="unit config (default: built-in defaults)")
    p.add_argument(
        "--models-from",
        type=Path,
        default=None,
        help="development only: folder with the raw source .tflite files",
    )
    return p.parse_args(argv)


def prepared(value: T | None, what: str) -> T:
    """What a vision part needs; it is prepared whenever the models and the face corpus are there, and the
    parts are not run without them."""
    if value is None:
        raise RuntimeError(f"{what} was not prepared: no models or no face corpus")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = str(args.quick).strip().lower() not in ("0", "", "no", "false")
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        print(f"unknown part(s): {', '.join(unknown)} (known: {', '.join(PARTS)})", file=sys.stderr)
        return 2
    faces = Path(os.environ.get("LFR_FACES", REPO_ROOT.parent / "shared" / "faces")).resolve()
    ctx = BenchContext(args.out.resolve(), quick, faces, REPO_ROOT, args.models_from)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config_or_defaults(getattr(args, "config", None))
    command = "python -m lfr_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.monotonic()

    vision_reason = ""
    try:
        variants = bench_variants(cfg, ctx.models_from)
    except VariantsUnavailable as exc:
        variants, vision_reason = [], f"no models: {exc}"
    if not (faces / "wild").is_dir():
        vision_reason = f"no face corpus at {faces} (set LFR_FACES)"
    frameset = photos = None
    if not vision_reason and {"perception", "peer"} & set(wanted):
        default = next(v for v in variants if v.is_default)
        sprites = make_sprites(build(default, cfg, ctx.all_threads), wild_photos(faces), 24 if quick else 60, ctx.seed)
        frameset = FrameSet(sprites, ctx.seed)
    if not vision_reason:
        photos = accuracy.photo_set(ctx)

    results: dict[str, PartResult] = {}
    steps: dict[str, Callable[[], PartResult]] = {
        "perception": lambda: perception.run(ctx, cfg, variants, prepared(frameset, "the frame set")),
        "detection": lambda: detection.run(ctx, cfg),
        "accuracy": lambda: accuracy.run(ctx, cfg, variants, prepared(photos, "the photo set")),
        "embedders": lambda: embedders.run(ctx, cfg, prepared(photos, "the photo set")),
        "peer": lambda: peer.run(
            ctx,
            prepared(frameset, "the frame set"),
            prepared(photos, "the photo set"),
            results.get("accuracy") or not_measured("accuracy", "not run"),
            results.get("perception") or not_measured("perception", "not run"),
        ),
        "crowd": lambda: crowd.run(ctx, cfg),
        "scale": lambda: scale.run(ctx),
        "pipeline": lambda: pipeline.run(ctx),
        "latency": lambda: latency.run(ctx),
        "memory": lambda: memory.run(ctx, results.get("pipeline")),
    }
    needs_vision = {
        "perception": perception.SUMMARY_KEYS,
        "detection": detection.SUMMARY_KEYS,
        "crowd": crowd.SUMMARY_KEYS,
        "accuracy": accuracy.SUMMARY_KEYS,
        "embedders": embedders.SUMMARY_KEYS,
        "peer": peer.SUMMARY_KEYS,
    }
    on_daemon = {"pipeline": pipeline.SUMMARY_KEYS, "latency": latency.SUMMARY_KEYS, "memory": memory.SUMMARY_KEYS}
    for name in PARTS:
        if name not in wanted:
            continue
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        if name in needs_vision and vision_reason:
            result = not_measured(name, vision_reason, needs_vision[name])
        elif name in on_daemon:
            try:
                result = steps[name]()
            except (RuntimeError, TimeoutError, OSError, ValueError) as exc:  # the van or the daemon failed
                result = not_measured(name, f"the simulated van run failed: {exc}", on_daemon[name])
        else:
            result = steps[name]()
        results[name] = result
        print(result.table if result.measured else f"not measured: {result.reason}")
        print(f"({name}: {time.monotonic() - t0:.0f} s)", flush=True)
    doc = write_results(ctx.out_dir, machine_info(), command, list(results.values()))
    print("\n== summary")
    for key, value in doc["summary"].items():
        print(f"{key:28s} {'not measured' if value is None else value}")
    print(f"wrote {ctx.out_dir}/REPORT.md in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
