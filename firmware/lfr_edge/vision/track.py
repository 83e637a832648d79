"""Tracking: one track per person walking through one camera's view.

Faces are associated with tracks by box overlap and embedding similarity (greedy, best pairs first), a
track survives `max_missed_frames` frames without a face, then ends. A track keeps only its `best_k`
faces by quality (embedding and aligned crop, for matching and for the alert's live picture); when it
ends, those buffers are zeroed before they are dropped, so nothing of a person who matched nothing
remains. The association's scratch copies of the embeddings are zeroed too, and its similarities are not
computed through BLAS (whose packing buffers would keep copies nobody zeroes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from lfr_edge.config import TrackConfig
from lfr_edge.vision.pipeline import Face

Box = tuple[float, float, float, float]


@dataclass
class TrackFace:
    quality: float
    embedding: npt.NDArray[np.float32]
    crop: npt.NDArray[np.uint8]
    frame_index: int
    timestamp: float

    def wipe(self) -> None:
        self.embedding.fill(0)
        self.crop.fill(0)


@dataclass
class Track:
    id: int
    camera: str
    box: Box
    first_seen: float
    last_seen: float
    last_frame: int
    missed: int = 0
    frames_seen: int = 0
    best: list[TrackFace] = field(default_factory=list)
    alerted_subjects: set[str] = field(default_factory=set)
    new_evidence: bool = False  # a face was added to `best` in the latest frame
    recent: npt.NDArray[np.float32] | None = None  # the latest embedding, for association

    def embeddings(self) -> npt.NDArray[np.float32]:
        """A copy of the best faces' embeddings (one row each): the caller zeroes it when done."""
        if not self.best:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([f.embedding for f in self.best])

    def best_face(self) -> TrackFace | None:
        return max(self.best, key=lambda f: f.quality, default=None)

    def observe(self, face: Face, frame_index: int, timestamp: float, best_k: int) -> None:
        """This frame's face of the person: it moves the track, and joins `best` if it is among the best_k."""
        self.box = face.detection.box
        self.last_seen = timestamp
        self.last_frame = frame_index
        self.missed = 0
        self.frames_seen += 1
        self.new_evidence = False
        if face.embedding is None:
            return
        if self.recent is None:
            self.recent = face.embedding.copy()
        else:
            self.recent[:] = face.embedding
        candidate = TrackFace(face.quality.score, face.embedding.copy(), face.aligned.copy(), frame_index, timestamp)
        if len(self.best) < best_k:
            self.best.append(candidate)
            self.new_evidence = True
            return
        worst = min(range(len(self.best)), key=lambda k: self.best[k].quality)
        if candidate.quality > self.best[worst].quality:
            self.best[worst].wipe()
            self.best[worst] = candidate
            self.new_evidence = True
        else:
            candidate.wipe()

    def miss(self) -> None:
        """A frame without this person's face."""
        self.missed += 1
        self.new_evidence = False

    def wipe(self) -> None:
        for face in self.best:
            face.wipe()
        self.best.clear()
        if self.recent is not None:
            self.recent.fill(0)
            self.recent = None


def iou_matrix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Pairwise IoU of boxes a (N, 4) and b (M, 4)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    result: npt.NDArray[np.float32] = (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)).astype(
        np.float32
    )
    return result


def similarities(faces: list[Face], tracks: list[Track], dim: int) -> npt.NDArray[np.float32]:
    """Cosine similarity of each face's embedding with each track's latest (0 where either has none)."""
    face_emb = np.zeros((len(faces), dim), dtype=np.float32)
    track_emb = np.zeros((len(tracks), dim), dtype=np.float32)
    try:
        for i, face in enumerate(faces):
            if face.embedding is not None:
                face_emb[i] = face.embedding
        for j, track in enumerate(tracks):
            if track.recent is not None:
                track_emb[j] = track.recent
        sim: npt.NDArray[np.float32] = np.einsum("id,jd->ij", face_emb, track_emb)
        return sim
    finally:
        face_emb.fill(0)
        track_emb.fill(0)


@dataclass(frozen=True)
class TrackUpdate:
    active: list[Track]  # tracks that saw a face this frame
    ended: list[Track]  # tracks that ended this frame (already wiped unless the caller keeps them)


class Tracker:
    """Tracks of one camera. Not thread-safe: one tracker per camera's pipeline thread."""

    def __init__(self, camera: str, cfg: TrackConfig) -> None:
        self.camera = camera
        self.cfg = cfg
        self.tracks: list[Track] = []
        self._next_id = 1

    def apply(self, cfg: TrackConfig) -> None:
        """A reloaded [track] section, for the next frame; tracks in progress keep what they hold."""
        self.cfg = cfg

    def update(self, faces: list[Face], frame_index: int, timestamp: float) -> TrackUpdate:
        boxes = np.array([f.detection.box for f in faces], dtype=np.float32).reshape(-1, 4)
        assigned = self._associate(faces, boxes)
        active: list[Track] = []
        used_tracks = set()
        for face_i, track_i in assigned.items():
            track = self.tracks[track_i]
            used_tracks.add(track_i)
            track.observe(faces[face_i], frame_index, timestamp, self.cfg.best_k)
            active.append(track)
        for track_i, track in enumerate(self.tracks):
            if track_i not in used_tracks:
                track.miss()
        for face_i, face in enumerate(faces):
            if face_i not in assigned:
                track = Track(self._next_id, self.camera, face.detection.box, timestamp, timestamp, frame_index)
                self._next_id += 1
                self.tracks.append(track)
                track.observe(face, frame_index, timestamp, self.cfg.best_k)
                active.append(track)
        ended = [t for t in self.tracks if t.missed > self.cfg.max_missed_frames]
        self.tracks = [t for t in self.tracks if t.missed <= self.cfg.max_missed_frames]
        return TrackUpdate(active, ended)

    def end_all(self) -> list[Track]:
        ended, self.tracks = self.tracks, []
        return ended

    def _associate(self, faces: list[Face], boxes: npt.NDArray[np.float32]) -> dict[int, int]:
        """face index -> track index, greedy on the best affinity first."""
        if not faces or not self.tracks:
            return {}
        track_boxes = np.array([t.box for t in self.tracks], dtype=np.float32)
        iou = iou_matrix(boxes, track_boxes)
        dim = next((f.embedding.shape[0] for f in faces if f.embedding is not None), 0)
        sim = np.zeros_like(iou)
        if dim:
            sim = similarities(faces, self.tracks, dim)
        # A pair qualifies by overlap, or by a similar face near the track (a fast walker, a missed frame).
        widths = np.maximum(track_boxes[:, 2] - track_boxes[:, 0], 1.0)
        centres_f = (boxes[:, :2] + boxes[:, 2:]) / 2
        centres_t = (track_boxes[:, :2] + track_boxes[:, 2:]) / 2
        distance = np.linalg.norm(centres_f[:, None] - centres_t[None], axis=2) / widths[None]
        near = distance < 1.5 + 0.5 * np.array([t.missed for t in self.tracks])[None]
        qualifies = (iou >= self.cfg.iou_min) | ((sim >= self.cfg.embedding_min) & near)
        affinity = np.where(qualifies, iou + sim, -np.inf)
        result: dict[int, int] = {}
        while np.isfinite(affinity).any():
            row, col = (int(x) for x in np.unravel_index(int(np.argmax(affinity)), affinity.shape))
            result[row] = col
            affinity[row, :] = -np.inf
            affinity[:, col] = -np.inf
        return result
