"""The peer, `face_recognition` (dlib's HOG detector and ResNet embedding), on the same frames and photos.

It runs in its own virtual environment made by the bench (`.cache/bench-peer-venv`, pinned versions,
dlib from the `dlib-bin` wheel so nothing is compiled), as a subprocess (peer_worker.py) exchanging
files in a temporary folder that is deleted afterwards. Frame timings run alone; the photo embeddings
(accuracy only, not timed) are split over two processes to keep the quick mode quick.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lfr_bench.accuracy import PhotoSet, ScoredSet, evaluate, headline, plot_identification, plot_roc
from lfr_bench.common import BenchContext, PartResult, format_table, ms_stats, not_measured
from lfr_bench.frames import FrameSet

# Exact versions that install here from wheels (face_recognition's own dependency on `dlib` is skipped:
# it would build dlib from source; `dlib-bin` provides the same module).
PINS = ("dlib-bin==20.0.1.post1", "numpy==2.4.6", "pillow==13.0.0", "click==8.5.1", "setuptools==65.5.0")
NO_DEPS_PINS = ("face_recognition==1.3.0", "face_recognition_models==0.3.0")
UPSAMPLE = 1  # face_recognition's default: finds faces down to about 40 px
SUMMARY_KEYS = ("peer_fps_720p_5faces", "peer_ms_per_face_720p", "peer_tar_far_1e3", "peer_fnir_fpir_1e3")
WORKER = Path(__file__).with_name("peer_worker.py")


class PeerUnavailable(RuntimeError):
    pass


def ensure_venv(root: Path) -> Path:
    """The peer's python, installing the pinned packages once (a stamp file records the pins)."""
    venv = root / ".cache" / "bench-peer-venv"
    python = venv / "bin" / "python"
    stamp = venv / "lfr-bench-pins.txt"
    wanted = "\n".join(PINS + NO_DEPS_PINS)
    if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            *NO_DEPS_PINS,
        ],
        [str(python), "-c", "import face_recognition, dlib"],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise PeerUnavailable(f"`{' '.join(cmd[2:5])} ...` failed: {' / '.join(tail)}")
    stamp.write_text(wanted)
    return python


def _job(python: Path, job_dir: Path, job: dict[str, Any]) -> subprocess.Popen[str]:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "job.json").write_text(json.dumps(job))
    return subprocess.Popen(
        [str(python), str(WORKER), str(job_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait(proc: subprocess.Popen[str], timeout: float) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise PeerUnavailable(f"the peer worker ran past {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise PeerUnavailable(f"the peer worker failed: {' / '.join(err.strip().splitlines()[-3:])}")


def photo_embeddings(
    python: Path, base: Path, wild: list[str], aligned: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The peer's embeddings of the largest face of each wild photo (and whether it found one) and of each
    aligned crop, by two worker processes writing into `base`/p0 and p1 (not timed)."""
    jobs = [{"upsample": UPSAMPLE, "frame_repeats": 0, "wild": wild[k::2], "aligned": aligned[k::2]} for k in range(2)]
    halves = [_job(python, base / f"p{k}", job) for k, job in enumerate(jobs)]
    for proc in halves:
        _wait(proc, 3600)
    parts = [np.load(base / f"p{k}" / "embeddings.npz") for k in range(2)]
    return (
        _interleave([p["wild"] for p in parts], len(wild)),
        _interleave([p["wild_found"] for p in parts], len(wild)),
        _interleave([p["aligned"] for p in parts], len(aligned)),
    )


def run(
    ctx: BenchContext, frameset: FrameSet, photos: PhotoSet, ours: PartResult, perception: PartResult
) -> PartResult:
    try:
        python = ensure_venv(ctx.repo_root)
    except (PeerUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        return not_measured("peer", f"face_recognition could not be installed: {exc}", SUMMARY_KEYS)
    sizes = ((1280, 720),) if ctx.quick else ((640, 480), (1280, 720), (1920, 1080))
    n_frames, repeats = (2, 1) if ctx.quick else (3, 2)
    frames = {f"{w}x{h}": np.stack([f.image for f in frameset.frames(w, h, 5, n_frames)]) for w, h in sizes}
    wild = [str(p) for p in photos.wild]
    aligned = [str(p) for p in photos.aligned]
    try:
        with tempfile.TemporaryDirectory(prefix="lfr-bench-peer-") as tmp:
            base = Path(tmp)
            (base / "t").mkdir()
            np.savez(base / "t" / "frames.npz", allow_pickle=False, **frames)
            timing = _job(
                python,
                base / "t",
                {"upsample": UPSAMPLE, "frame_repeats": repeats, "wild": [], "aligned": []},
            )
            _wait(timing, 1800)
            wild_emb, wild_found, al_emb = photo_embeddings(python, base, wild, aligned)
            result = json.loads((base / "t" / "result.json").read_text())
            photo_ms = [json.loads((base / f"p{k}" / "result.json").read_text()) for k in range(2)]
    except (PeerUnavailable, OSError, ValueError, KeyError) as exc:
        return not_measured("peer", f"the peer could not run: {exc}", SUMMARY_KEYS)
    scores = evaluate(
        ScoredSet(-distances(wild_emb), wild_found, photos.wild_labels),
        ScoredSet(-distances(al_emb), np.ones(len(aligned), dtype=bool), photos.aligned_labels),
        ctx.seed,
    )
    frame_rows: dict[str, dict[str, Any]] = {}
    for key, res in result["frames"].items():
        faces = max(1e-9, float(np.mean(res["faces_found"])))
        frame_rows[key] = {
            "faces_per_frame": 5,
            "faces_found_mean": round(float(np.mean(res["faces_found"])), 2),
            "detect": ms_stats(res["detect_ms"]),
            "encode": ms_stats(res["encode_ms"]),
            "frame": ms_stats(res["frame_ms"]),
            "encode_ms_per_face": round(float(np.median(res["encode_ms"])) / faces, 2),
        }
    head = frame_rows["1280x720"]
    acc = headline(scores)
    summary: dict[str, float | None] = {
        "peer_fps_720p_5faces": round(1000.0 / head["frame"]["median_ms"], 3),
        "peer_ms_per_face_720p": head["encode_ms_per_face"],
        "peer_tar_far_1e3": acc["tar_far_1e3"],
        "peer_fnir_fpir_1e3": acc["fnir_fpir_1e3"],
    }
    ours_default = ours.data["default_variant"] if ours.measured else None
    ratios = _ratios(summary, ours.summary, perception.summary)
    summary.update(ratios)
    rows = [
        [key, r["faces_found_mean"], f"{r['detect']['median_ms']:.0f}", f"{r['encode']['median_ms']:.0f}",
         f"{r['frame']['median_ms']:.0f}/{r['frame']['p99_ms']:.0f}", r["encode_ms_per_face"]]
        for key, r in frame_rows.items()
    ]  # fmt: skip
    table = format_table(
        ["frame (5 faces)", "faces found", "HOG detect ms", "encode ms", "frame med/p99 ms", "ms per face"],
        rows,
    )
    at_far = {p["far"]: p for p in scores["wild"]["at_far"]}
    at_fpir = {p["fpir"]: p for p in scores["identification"]["at_fpir"]}
    table += "\n\n" + format_table(
        ["peer", "wild faces", "TAR@FAR1e-3", "TAR@1e-4", "FNIR@FPIR1e-2", "FNIR@FPIR1e-3"],
        [["face_recognition", f"{scores['wild']['faces_found']}/{scores['wild']['photos']}",
          at_far[1e-3]["tar"], at_far[1e-4]["tar"], at_fpir[0.01]["fnir"], at_fpir[0.001]["fnir"]]],
    )  # fmt: skip
    plots = []
    if ours.measured and ours_default is not None:
        both = {f"ours ({ours_default})": ours.data["variants"][ours_default], "face_recognition": scores}
        plots = [
            plot_roc(ctx, both, "peer-roc.png"),
            plot_identification(ctx, both, "peer-identification.png"),
        ]
    data = {
        "versions": result["versions"],
        "upsample": UPSAMPLE,
        "frames": frame_rows,
        "frames_per_size": n_frames,
        "repetitions": repeats,
        "photo_ms_median": ms_stats([m for p in photo_ms for m in p["wild_ms"]])["median_ms"],
        "accuracy": scores,
        "ratios": ratios,
    }
    notes = [
        "scores are negative Euclidean distances of the 128-d dlib embeddings (higher = more alike)",
        "same frames (same seed) and same photo lists as ours; frame timings single process, alone",
        "per-photo embedding for accuracy ran as two processes (not timed against ours)",
    ]
    return PartResult("peer", True, data=data, table=table, plots=plots, summary=summary, notes=notes)


def _ratios(
    peer: dict[str, float | None], accuracy: dict[str, float | None], perception: dict[str, float | None]
) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    return {
        "fps_ratio_720p_5faces": ratio(perception.get("fps_720p_5faces"), peer["peer_fps_720p_5faces"]),
        "tar_far_1e3_ratio": ratio(accuracy.get("tar_far_1e3"), peer["peer_tar_far_1e3"]),
        "fnir_fpir_1e3_ratio": ratio(accuracy.get("fnir_fpir_1e3"), peer["peer_fnir_fpir_1e3"]),
    }


def _interleave(halves: list[np.ndarray], n: int) -> np.ndarray:
    out = np.zeros((n, *halves[0].shape[1:]), dtype=halves[0].dtype)
    for k, half in enumerate(halves):
        out[k::2] = half
    return out


def distances(emb: np.ndarray) -> np.ndarray:
    sq = (emb**2).sum(1)
    return np.asarray(np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * emb @ emb.T, 0.0)))
