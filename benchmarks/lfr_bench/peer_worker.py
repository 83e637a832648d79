"""The peer `face_recognition` (dlib HOG detector + ResNet embedding) on the bench's frames and photos.

Run by the peer's own virtual environment's python (it imports nothing from lfr_edge):
    python peer_worker.py JOB_DIR
JOB_DIR/job.json names the inputs; the worker writes JOB_DIR/result.json and JOB_DIR/embeddings.npz.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import face_recognition
import numpy as np


def largest(locations: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    if not locations:
        return None
    return max(locations, key=lambda loc: (loc[2] - loc[0]) * (loc[1] - loc[3]))


def run_frames(frames: np.ndarray, repeats: int, upsample: int) -> dict[str, Any]:
    detect_ms, encode_ms, frame_ms, faces = [], [], [], []
    for _ in range(repeats):
        for image in frames:
            t0 = time.perf_counter()
            locations = face_recognition.face_locations(image, upsample, "hog")
            t1 = time.perf_counter()
            face_recognition.face_encodings(image, locations)
            t2 = time.perf_counter()
            detect_ms.append((t1 - t0) * 1e3)
            encode_ms.append((t2 - t1) * 1e3)
            frame_ms.append((t2 - t0) * 1e3)
            faces.append(len(locations))
    return {"detect_ms": detect_ms, "encode_ms": encode_ms, "frame_ms": frame_ms, "faces_found": faces}


def run_photos(paths: list[str], upsample: int, aligned: bool) -> tuple[np.ndarray, np.ndarray, list[float]]:
    emb = np.zeros((len(paths), 128), dtype=np.float64)
    found = np.zeros(len(paths), dtype=bool)
    ms = []
    for i, path in enumerate(paths):
        image = face_recognition.load_image_file(path)
        t0 = time.perf_counter()
        location: tuple[int, int, int, int] | None
        if aligned:  # already a face crop: embed it directly, as ours does
            location = (0, image.shape[1], image.shape[0], 0)
        else:
            location = largest(face_recognition.face_locations(image, upsample, "hog"))
        if location is not None:
            emb[i] = face_recognition.face_encodings(image, [location])[0]
            found[i] = True
        ms.append((time.perf_counter() - t0) * 1e3)
    return emb, found, ms


def main(job_dir: Path) -> int:
    job = json.loads((job_dir / "job.json").read_text())
    upsample = int(job["upsample"])
    frame_sets = {}
    if (job_dir / "frames.npz").is_file():
        with np.load(job_dir / "frames.npz") as frames:
            for key in frames.files:
                frame_sets[key] = run_frames(frames[key], int(job["frame_repeats"]), upsample)
    wild_emb, wild_found, wild_ms = run_photos(job["wild"], upsample, aligned=False)
    al_emb, al_found, al_ms = run_photos(job["aligned"], upsample, aligned=True)
    np.savez(
        job_dir / "embeddings.npz",
        wild=wild_emb,
        wild_found=wild_found,
        aligned=al_emb,
        aligned_found=al_found,
    )
    versions: dict[str, str | None] = {}
    for dist in ("face_recognition", "face_recognition_models", "dlib-bin", "numpy", "pillow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    result = {"frames": frame_sets, "wild_ms": wild_ms, "aligned_ms": al_ms, "versions": versions}
    (job_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
