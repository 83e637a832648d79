"""`lfr-photos summary`: detect and embed the faces in a folder of photos and print a readable summary.

The first step of `make demo` (the full simulated van comes with the simulator): it shows the perception
core working on real photos, and how alike the photos of one person are compared with different people.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from lfr_tools.photos.image import ImageError, read_image

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    p = sub.add_parser(
        "summary", help="detect and embed the faces in a folder of photos; print a summary", parents=parents
    )
    p.add_argument("folder", type=Path, help="folder of photos, optionally one sub-folder per person")
    p.add_argument("--limit", type=int, default=60, help="at most this many photos (default 60)")
    p.add_argument("--variant", default=None, help="embedder variant (default: the manifest's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lfr_edge.config import load_config_or_defaults
    from lfr_edge.vision.pipeline import build_pipeline

    if not args.folder.is_dir():
        print(f"lfr-photos summary: {args.folder} is not a folder", file=sys.stderr)
        return 2
    photos = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    # Spread the sample over people rather than taking the first folder's photos only.
    photos = photos[:: max(1, len(photos) // args.limit)][: args.limit]
    if not photos:
        print(f"lfr-photos summary: no .jpg or .png photos under {args.folder}", file=sys.stderr)
        return 2
    cfg = load_config_or_defaults(getattr(args, "config", None))
    pipeline = build_pipeline(cfg, args.variant)
    print(f"models: {pipeline.model_id} on {cfg.inference.backend} ({cfg.inference.threads} threads)")
    print(f"{'photo':<34} {'faces':>5} {'passed':>6} {'largest px':>10} {'detect ms':>9} {'embed ms':>8}")
    people, embeddings = [], []
    detect_ms, embed_ms, rejected = [], [], 0
    for photo in photos:
        try:
            image = read_image(photo)
        except ImageError as exc:
            print(f"  skipped: {exc}")
            continue
        result = pipeline.process(image)
        detect_ms.append(result.stage_ms["detect"])
        embed_ms.append(result.stage_ms["embed"])
        passed = [f for f in result.faces if f.embedding is not None]
        rejected += len(result.faces) - len(passed)
        best = max(passed, key=lambda f: f.detection.width, default=None)
        if best is not None and best.embedding is not None:
            people.append(photo.parent.name)
            embeddings.append(best.embedding)
        width = f"{best.detection.width:.0f}" if best else "-"
        name = str(photo.relative_to(args.folder))[-34:]
        print(
            f"{name:<34} {len(result.faces):>5} {len(passed):>6} {width:>10} "
            f"{result.stage_ms['detect']:>9.1f} {result.stage_ms['embed']:>8.1f}"
        )
        del image, result  # nothing of the photo is kept beyond this loop
    print()
    print(f"photos: {len(photos)}, with an embedded face: {len(embeddings)}, faces refused by quality: {rejected}")
    if detect_ms:
        print(f"median detect {statistics.median(detect_ms):.1f} ms, median embed {statistics.median(embed_ms):.1f} ms")
    if len(embeddings) >= 2:
        emb = np.stack(embeddings)
        sims = emb @ emb.T
        labels = np.array(people)
        iu = np.triu_indices(len(labels), 1)
        same = (labels[:, None] == labels[None, :])[iu]
        if same.any() and (~same).any():
            print(
                f"cosine similarity: same person median {np.median(sims[iu][same]):.2f}, "
                f"different people median {np.median(sims[iu][~same]):.2f} "
                f"({int(same.sum())} and {int((~same).sum())} pairs)"
            )
    print("nothing was written to disk: frames, crops and embeddings lived in memory only.")
    return 0
