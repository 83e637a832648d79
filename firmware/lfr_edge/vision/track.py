"""Tracking: one track per person walking through one camera's view, by motion alone, and its best shots.

A track predicts where its face will be (its box and keypoints moved on at the velocity of its last
sightings); each frame's faces are associated greedily, best pairs first, by the overlap of their box with
the predicted one and by how far their keypoints are from the predicted keypoints, in face widths. No
embedding is needed to follow a person, so a face is embedded only when it would be one of the track's
best shots (`shot_priority`; the worker spends a per-frame budget on them). A track keeps its `best_k`
shots (embedding and aligned crop, for matching and the alert's live picture); when it ends they are
zeroed before being dropped, so nothing of a person who matched nothing remains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from lfr_edge.config import TrackConfig
from lfr_edge.vision.pipeline import Face

Box = tuple[float, float, float, float]
Vector = npt.NDArray[np.float32]


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
    keypoints: Vector = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    velocity: Vector = field(default_factory=lambda: np.zeros(4, np.float32))  # box change per frame
    missed: int = 0
    frames_seen: int = 0
    best: list[TrackFace] = field(default_factory=list)
    alerted_subjects: set[str] = field(default_factory=set)
    new_evidence: bool = False  # a shot was added in the latest frame

    def embeddings(self) -> npt.NDArray[np.float32]:
        """A copy of the best shots' embeddings (one row each): the caller zeroes it when done."""
        if not self.best:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([f.embedding for f in self.best])

    def best_face(self) -> TrackFace | None:
        return max(self.best, key=lambda f: f.quality, default=None)

    def predicted(self, frame_index: int) -> tuple[Vector, Vector]:
        """Where the face should be in this frame: (box (4,), keypoints (K, 2))."""
        step = self.velocity * np.float32(frame_index - self.last_frame)
        box: Vector = (np.asarray(self.box, np.float32) + step).astype(np.float32)
        shift = (step[:2] + step[2:]) / np.float32(2)
        keypoints: Vector = (self.keypoints + shift[None]).astype(np.float32)
        return box, keypoints

    def move(self, face: Face, frame_index: int, timestamp: float) -> None:
        """This frame's face of the person: the track follows it."""
        gap = max(1, frame_index - self.last_frame)
        new_box = np.asarray(face.detection.box, np.float32)
        seen: Vector = ((new_box - np.asarray(self.box, np.float32)) / gap).astype(np.float32)
        self.velocity = seen if self.frames_seen == 1 else ((self.velocity + seen) / 2).astype(np.float32)
        self.box = face.detection.box
        self.keypoints = face.detection.keypoints.astype(np.float32)
        self.last_seen, self.last_frame = timestamp, frame_index
        self.missed = 0
        self.frames_seen += 1
        self.new_evidence = False

    def shot_priority(self, face: Face, frame_index: int, min_shots: int, gain: float) -> tuple[int, float] | None:
        """(tier, gain) if this face is worth an embedding, lower tiers first: 0 a new track, 1 a track with
        fewer than `min_shots` shots (a later frame corroborates), 2 a face better than the track's best shot
        by more than `gain`; None when it is not worth one."""
        if not face.quality.ok or (self.best and self.best[-1].frame_index == frame_index):
            return None
        quality = face.quality.score
        best = max((f.quality for f in self.best), default=0.0)
        if not self.best:
            return 0, -quality
        if len(self.best) < min_shots and frame_index > max(f.frame_index for f in self.best):
            return 1, -quality
        if quality > best * (1.0 + gain):
            return 2, -(quality / max(best, 1e-9))
        return None

    def add_shot(self, face: Face, embedding: Vector, frame_index: int, timestamp: float, best_k: int) -> None:
        """Keep this embedded face (copies) among the track's best_k shots."""
        shot = TrackFace(face.quality.score, embedding.copy(), face.aligned.copy(), frame_index, timestamp)
        if len(self.best) >= best_k:
            worst = min(range(len(self.best)), key=lambda k: self.best[k].quality)
            if shot.quality <= self.best[worst].quality:
                shot.wipe()
                return
            self.best.pop(worst).wipe()
        self.best.append(shot)
        self.new_evidence = True

    def miss(self) -> None:
        """A frame without this person's face."""
        self.missed += 1
        self.new_evidence = False

    def wipe(self) -> None:
        for face in self.best:
            face.wipe()
        self.best.clear()


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


@dataclass(frozen=True)
class TrackUpdate:
    seen: list[tuple[Track, Face]]  # each track that saw a face this frame, with that face
    ended: list[Track]  # tracks that ended this frame (the caller wipes them)

    @property
    def active(self) -> list[Track]:
        return [track for track, _ in self.seen]


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
        assigned = self._associate(faces, frame_index)
        seen: list[tuple[Track, Face]] = []
        for face_i, track_i in assigned.items():
            self.tracks[track_i].move(faces[face_i], frame_index, timestamp)
            seen.append((self.tracks[track_i], faces[face_i]))
        used = set(assigned.values())
        for track_i, track in enumerate(self.tracks):
            if track_i not in used:
                track.miss()
        for face_i, face in enumerate(faces):
            if face_i not in assigned:
                track = Track(self._next_id, self.camera, face.detection.box, timestamp, timestamp, frame_index)
                self._next_id += 1
                self.tracks.append(track)
                track.move(face, frame_index, timestamp)
                seen.append((track, face))
        ended = [t for t in self.tracks if t.missed > self.cfg.max_missed_frames]
        self.tracks = [t for t in self.tracks if t.missed <= self.cfg.max_missed_frames]
        return TrackUpdate(seen, ended)

    def end_all(self) -> list[Track]:
        ended, self.tracks = self.tracks, []
        return ended

    def _associate(self, faces: list[Face], frame_index: int) -> dict[int, int]:
        """face index -> track index, greedy on the best affinity first."""
        if not faces or not self.tracks:
            return {}
        boxes = np.array([f.detection.box for f in faces], dtype=np.float32).reshape(-1, 4)
        predicted = [t.predicted(frame_index) for t in self.tracks]
        track_boxes = np.stack([box for box, _ in predicted])
        iou = iou_matrix(boxes, track_boxes)
        widths = np.maximum(track_boxes[:, 2] - track_boxes[:, 0], 1.0)
        face_widths = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
        face_kp = np.stack([f.detection.keypoints for f in faces]).astype(np.float32)  # (N, K, 2)
        track_kp = np.stack([kp for _, kp in predicted])  # (M, K, 2): one detector, one keypoint layout
        jump = np.linalg.norm(face_kp[:, None] - track_kp[None], axis=3).mean(axis=2) / widths[None]
        allowed = self.cfg.max_jump * (1.0 + 0.5 * np.array([t.missed for t in self.tracks], np.float32))
        ratio = face_widths[:, None] / widths[None]
        qualifies = ((iou >= self.cfg.iou_min) | (jump <= allowed[None])) & (ratio > 0.6) & (ratio < 1.7)
        affinity = np.where(qualifies, iou - jump, -np.inf)
        result: dict[int, int] = {}
        while np.isfinite(affinity).any():
            row, col = (int(x) for x in np.unravel_index(int(np.argmax(affinity)), affinity.shape))
            result[row] = col
            affinity[row, :] = -np.inf
            affinity[:, col] = -np.inf
        return result
