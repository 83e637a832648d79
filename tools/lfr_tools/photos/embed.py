"""`lfr-photos embed`: embed the subject of every photo in a list (benchmarks, tests), found in photo mode."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lfr_edge.vision.pipeline import FacePipeline
from lfr_tools.photos.image import ImageError, read_image
from lfr_tools.photos.photo_mode import PhotoFaceFinder
from lfr_tools.progress import progress as show_progress


@dataclass(frozen=True)
class EmbeddedPhotos:
    paths: list[str]
    found: npt.NDArray[np.bool_]
    boxes: npt.NDArray[np.float32]  # (N, 4) x1 y1 x2 y2, zeros where no face
    scores: npt.NDArray[np.float32]
    emb: npt.NDArray[np.float32]  # (N, D), zeros where no face


def embed_photos(pipeline: FacePipeline, paths: list[str], progress: bool = True) -> EmbeddedPhotos:
    """For each photo, its subject (photo mode: the whole photo, the largest face weighted by its closeness to
    the centre), aligned and embedded; the quality gate is not applied (enrolment applies its own checks)."""
    n, dim = len(paths), pipeline.embedder.dim
    found = np.zeros(n, dtype=bool)
    boxes = np.zeros((n, 4), dtype=np.float32)
    scores = np.zeros(n, dtype=np.float32)
    emb = np.zeros((n, dim), dtype=np.float32)
    finder = PhotoFaceFinder.for_pipeline(pipeline)
    bar = show_progress(n, "embedding", "photo", enabled=progress and n >= 20)
    for i, path in enumerate(paths):
        bar.update(1)
        try:
            image = read_image(Path(path))
        except ImageError as exc:
            bar.write(f"unreadable: {exc}")
            continue
        face = finder.subject(image, refuse_ambiguous=False).face
        image.fill(0)
        if face is None:
            continue
        found[i] = True
        boxes[i] = face.detection.box
        scores[i] = face.detection.score
        emb[i] = pipeline.embed_aligned(face.aligned[None])[0]
        face.aligned.fill(0)
    bar.close()
    return EmbeddedPhotos(paths, found, boxes, scores, emb)


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    p = sub.add_parser("embed", help="embed the subject of each photo listed in a file (photo mode)", parents=parents)
    p.add_argument("--list", required=True, type=Path, help="text file, one image path per line")
    p.add_argument("--npz", required=True, type=Path, help="output .npz (paths, found, boxes, scores, emb)")
    p.add_argument("--variant", default=None, help="embedder variant (float, int8-static, ...; default: manifest's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lfr_edge.config import load_config_or_defaults
    from lfr_edge.vision.pipeline import build_pipeline

    try:
        lines = args.list.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"lfr-photos embed: cannot read the list {args.list}: {exc}", file=sys.stderr)
        return 2
    paths = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    pipeline = build_pipeline(load_config_or_defaults(getattr(args, "config", None)), args.variant)
    result = embed_photos(pipeline, paths)
    np.savez(
        args.npz,
        paths=np.array(result.paths),
        found=result.found,
        boxes=result.boxes,
        scores=result.scores,
        emb=result.emb,
        model_id=np.array(pipeline.model_id),
    )
    print(f"{int(result.found.sum())} of {len(paths)} photos had a face; wrote {args.npz} ({pipeline.model_id})")
    return 0
