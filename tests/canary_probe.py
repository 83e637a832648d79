"""Run the unit's real per-frame work on a real photo of a passer-by, end the track unmatched, then search this
process's own memory for that passer-by's embedding and face crop (tests/test_canary.py runs this in a fresh
process and reads the JSON it prints).

The canaries are the exact bytes the pipeline produced: the face crop (uint8), its grey copy (the quality
gate), the model's input (the crop and its mirror as float32: the flip-average batch), the model's raw outputs
and the final embedding (float32). They are captured masked (XOR 0xA5), so the probe holds no copy of its
own; at search time each one is unmasked into one buffer whose address is left out of the search, as is
the buffer memory is read into. Every readable and writable mapping of /proc/self/maps with resident
pages is read through /proc/self/mem.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import bundle
from lfr_contracts.bundle import SubjectEntry
from lfr_contracts.camera import Frame
from lfr_edge.config import Config, MatchConfig, TrackConfig, parse_config
from lfr_edge.daemon.alerting import Alerter
from lfr_edge.daemon.worker import PipelineWorker
from lfr_edge.inference.base import TensorSpec
from lfr_edge.vision.embed import Embedder
from lfr_edge.vision.pipeline import Face, FacePipeline, build_pipeline
from lfr_edge.watchlist.store import WatchlistStore
from lfr_tools.photos.image import read_image

MASK = 0xA5
WINDOW = 256  # bytes of each crop-like canary searched for (several windows each: partial copies count too)
CHUNK = 8 << 20


def masked(array: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """The array's bytes XOR MASK (a new array; the array itself must be C-contiguous)."""
    if not array.flags.c_contiguous:
        raise ValueError("canaries are taken of contiguous arrays only (a copy would be a canary itself)")
    return np.bitwise_xor(array.reshape(-1).view(np.uint8), np.uint8(MASK))


@dataclass
class Canary:
    name: str
    masked: npt.NDArray[np.uint8]
    windows: tuple[tuple[int, int], ...]  # (offset, length) of the parts searched for


def distinctive(canary: Canary) -> Canary:
    """The canary with only the windows that could not be found by chance (a uniform run matches anything)."""
    kept = tuple((o, n) for o, n in canary.windows if len(np.unique(canary.masked[o : o + n])) >= 16)
    return Canary(canary.name, canary.masked, kept)


def windows_of(size: int, length: int = WINDOW) -> tuple[tuple[int, int], ...]:
    """Five windows through the middle of a picture-like buffer (the face, not a uniform border)."""
    return tuple((int(size * f) - length // 2, length) for f in (0.3, 0.4, 0.5, 0.6, 0.7))


class SpyModel:
    """The embedder's real model; each run's input pair and raw outputs are kept, masked."""

    def __init__(self, inner: Any, canaries: list[Canary]) -> None:
        self._inner = inner
        self._canaries = canaries

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        spec: Sequence[TensorSpec] = self._inner.inputs
        return spec

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        spec: Sequence[TensorSpec] = self._inner.outputs
        return spec

    def run(self, *inputs: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        if not any(pair.any() for pair in inputs):  # the embedder's blank run (scrub): nobody's face
            result: list[npt.NDArray[np.float32]] = self._inner.run(*inputs)
            return result
        for pair in inputs:
            for half in pair:
                self._canaries.append(
                    Canary("model input (float32 crop or mirror)", masked(half), windows_of(half.nbytes))
                )
        outputs: list[npt.NDArray[np.float32]] = self._inner.run(*inputs)
        for row in outputs[0]:
            self._canaries.append(Canary("raw model output", masked(row), ((0, row.nbytes),)))
        return outputs


class SpyPipeline(FacePipeline):
    """The real pipeline; each face's crop, grey crop and embedding are kept, masked."""

    def __init__(self, real: FacePipeline, canaries: list[Canary], leave_a_copy: bool = False) -> None:
        embedder = Embedder(SpyModel(real.embedder.model, canaries), real.embedder.flip_average)
        super().__init__(real.detector, embedder, real.quality, real.model_id)
        self._canaries = canaries
        self._leave_a_copy = leave_a_copy
        self.left: list[npt.NDArray[np.float32]] = []  # the copy a careless stage would leave (--leave-a-copy)

    def observe(self, image: npt.NDArray[np.uint8]) -> tuple[list[Face], dict[str, float]]:
        faces, stage_ms = super().observe(image)
        for face in faces:
            self._canaries.append(Canary("face crop", masked(face.aligned), windows_of(face.aligned.nbytes)))
            grey = cv2.cvtColor(face.aligned, cv2.COLOR_RGB2GRAY)
            self._canaries.append(Canary("grey face crop", masked(grey), windows_of(grey.nbytes, 128)))
            grey.fill(0)
        return faces, stage_ms

    def refine(self, image: npt.NDArray[np.uint8], face: Face) -> None:
        super().refine(image, face)  # the crop redone from keypoints found close up: a crop of its own
        self._canaries.append(Canary("refined face crop", masked(face.aligned), windows_of(face.aligned.nbytes)))

    def embed_crops(self, crops: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        rows = super().embed_crops(crops)
        for row in rows:
            self._canaries.append(Canary("embedding", masked(row), ((0, row.nbytes),)))
            if self._leave_a_copy:
                self.left.append(row.copy())
        return rows


def watchlist(model_id: str, dim: int, subjects: int) -> WatchlistStore:
    """A held list of made-up subjects the passer-by does not match (matching runs, as on a deployment)."""
    rng = np.random.default_rng(7)
    centre, unit = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    entries = []
    for i in range(subjects):
        vector = rng.standard_normal((1, dim)).astype(np.float32)
        entries.append(SubjectEntry(f"S{i}", "wanted", "", vector / np.linalg.norm(vector), b"\xff\xd8jpeg"))
    now = time.time()
    payload = bundle.build_bundle(
        entries, deployment="D", unit_id="unit-a", unit_key=unit.public_key(), version=1, valid_from=now - 60,
        valid_until=now + 3600, threshold=0.5, model_id=model_id, sign_key=centre, issued_at=now - 60,
    )  # fmt: skip
    opened = bundle.open_bundle(
        payload, command_centre_key=centre.public_key(), unit_key=unit, unit_id="unit-a", model_id=model_id, now=now,
        history=bundle.AppliedHistory(None, None, frozenset()), max_bytes=len(payload),
    )  # fmt: skip
    try:
        return WatchlistStore.from_opened(opened)
    finally:
        opened.wipe()


class NoChannels:
    def append(self, event: object) -> None:
        raise AssertionError("the passer-by matched nobody: nothing may be audited")


def run_passer_by(
    photo: Path, canaries: list[Canary], subjects: int = 20, leave_a_copy: bool = False, cfg: Config | None = None
) -> tuple[dict[str, int], SpyPipeline]:
    """The passer-by walks through for a few frames, then leaves: the track ends unmatched."""
    real = build_pipeline(cfg or Config())
    pipeline = SpyPipeline(real, canaries, leave_a_copy)
    store = watchlist(real.model_id, real.embedder.dim, subjects)
    track_cfg = TrackConfig()
    worker = PipelineWorker(
        pipeline, ["cam0"], track_cfg, MatchConfig(), lambda: store, Alerter("unit-a", [], NoChannels())
    )
    # A 720p camera frame (RGB, as a camera source delivers it) with the passer-by at the photo's size: small to
    # YuNet's whole-frame pass, so the crop embedded is redone from keypoints found close up
    picture = np.zeros((720, 1280, 3), np.uint8)
    shot = read_image(photo)[:720, :880]
    picture[: shot.shape[0], 400 : 400 + shot.shape[1]] = shot
    shot.fill(0)
    empty = np.zeros_like(picture)
    index = 0
    for _ in range(3):
        worker.process([Frame("cam0", index, time.monotonic(), picture.copy())])
        index += 1
    for _ in range(track_cfg.max_missed_frames + 2):
        worker.process([Frame("cam0", index, time.monotonic(), empty.copy())])
        index += 1
    picture.fill(0)
    stats = worker.stats
    outcome = {
        "faces_embedded": stats.faces_embedded,
        "tracks_ended_unmatched": stats.tracks_ended_unmatched,
        "alerts": stats.alerts,
        "open_tracks": sum(len(t.tracks) for t in worker.trackers.values()),
    }
    return outcome, pipeline


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    perms: str
    name: str


def resident_writable_regions() -> Iterator[Region]:
    """Mappings that can hold data written at run time (rw), with at least one resident page."""
    region: Region | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
        if head:
            start, end, perms, name = int(head[1], 16), int(head[2], 16), head[3], head[4]
            region = Region(start, end, perms, name) if perms.startswith("rw") else None
            continue
        if region is not None and line.startswith("Rss:") and int(line.split()[1]) > 0:
            if region.name not in ("[vvar]", "[vsyscall]", "[vdso]", "[vvar_vclock]"):
                yield region
            region = None


def unique(canaries: list[Canary]) -> list[Canary]:
    """Each canary once (the same photo gives the same bytes in every frame)."""
    seen: dict[bytes, Canary] = {}
    for canary in canaries:
        seen.setdefault(canary.masked.tobytes(), canary)
    return [c for c in map(distinctive, seen.values()) if c.windows]


def search(canaries: list[Canary]) -> tuple[list[dict[str, Any]], int]:
    """Every place in memory that holds one of the canaries' windows; and the bytes searched."""
    longest = max(length for c in canaries for _, length in c.windows)
    arena = np.zeros(sum(c.masked.nbytes for c in canaries), np.uint8)  # the unmasked canaries, left out
    buffer = bytearray(CHUNK + longest)  # what memory is read into, left out
    arena_at = arena.ctypes.data
    buffer_at = np.frombuffer(buffer, np.uint8).ctypes.data
    skip = [(arena_at, arena_at + arena.nbytes), (buffer_at, buffer_at + len(buffer))]
    patterns: list[tuple[Canary, int, memoryview]] = []  # (canary, offset in it, the window's bytes)
    placed = 0
    for canary in canaries:
        np.bitwise_xor(canary.masked, np.uint8(MASK), out=arena[placed : placed + canary.masked.nbytes])
        for offset, size in canary.windows:
            patterns.append((canary, offset, memoryview(arena.data)[placed + offset : placed + offset + size]))
        placed += canary.masked.nbytes
    view = memoryview(buffer)
    found: dict[tuple[str, int], dict[str, Any]] = {}
    searched = 0
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for region in list(resident_writable_regions()):
            for start, end in _pieces(region, skip):
                for at, length in _chunks(fd, view, start, end, longest):
                    searched += length
                    for canary, offset, pattern in patterns:
                        hit = buffer.find(pattern, 0, length)
                        while hit >= 0:
                            key = (canary.name, at + hit - offset)
                            entry = found.setdefault(key, {
                                "canary": canary.name, "address": hex(key[1]), "mapping": region.name or "[anon]",
                                "perms": region.perms, "windows": 0,
                            })  # fmt: skip
                            entry["windows"] += 1
                            hit = buffer.find(pattern, hit + 1, length)
    finally:
        os.close(fd)
        arena.fill(0)
    return list(found.values()), searched


def _pieces(region: Region, skip: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The region without the probe's own buffers."""
    pieces = [(region.start, region.end)]
    for lo, hi in skip:
        pieces = [p for a, b in pieces for p in ((a, min(b, lo)), (max(a, hi), b)) if p[0] < p[1]]
    yield from pieces


def _chunks(fd: int, view: memoryview, start: int, end: int, overlap: int) -> Iterator[tuple[int, int]]:
    """Read [start, end) into `view` a chunk at a time (overlapping, so no match is cut in two)."""
    at = start
    while at < end:
        length = min(len(view), end - at)
        try:
            got = os.preadv(fd, [view[:length]], at)
        except OSError:  # a page that cannot be read (a guard page): skip it
            at += 4096
            continue
        if got <= 0:
            return
        yield at, got
        if at + got >= end:
            return
        at += max(got - overlap, 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("photo", type=Path)
    parser.add_argument("--subjects", type=int, default=20, help="subjects on the held watchlist")
    parser.add_argument("--leave-a-copy", action="store_true", help="keep one embedding (the probe must find it)")
    parser.add_argument("--backend", default=None, help="inference.backend (default: the unit's default)")
    parser.add_argument("--detector", default=None, help="models.detector")
    parser.add_argument("--embedder", default=None, help="models.embedder")
    args = parser.parse_args(argv)
    models = {k: v for k, v in (("detector", args.detector), ("embedder", args.embedder)) if v}
    cfg = parse_config({"inference": {"backend": args.backend} if args.backend else {}, "models": models})
    canaries: list[Canary] = []
    outcome, pipeline = run_passer_by(args.photo, canaries, args.subjects, args.leave_a_copy, cfg)
    gc.collect()
    canaries = unique(canaries)
    kinds = sorted({c.name for c in canaries})
    windows = sum(len(c.windows) for c in canaries)
    hits, searched = search(canaries)
    print(
        json.dumps(
            {
                **outcome,
                "canaries": len(canaries),
                "windows": windows,
                "kinds": kinds,
                "searched": searched,
                "hits": hits,
            }
        )
    )
    for left in pipeline.left:
        left.fill(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
