"""Verification accuracy from embeddings: genuine/impostor score split and TAR at a fixed FAR.

Used by the models build (to pick the default variant) and by the benchmarks. Scores are cosine
similarities of L2-normalised embeddings; a pair is accepted when its score is strictly above the
threshold, so the measured false-accept rate never exceeds the one asked for.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


def pair_scores(
    embeddings: npt.NDArray[np.floating], labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(genuine, impostor) cosine scores over all unordered pairs of distinct rows.

    `embeddings` is (N, D) and L2-normalised; `labels` holds N identity labels (any comparable type).
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    ids = np.asarray(labels)
    if emb.ndim != 2 or len(ids) != len(emb):
        raise ValueError(f"need (N, D) embeddings and N labels, got {emb.shape} and {len(ids)} labels")
    i, j = np.triu_indices(len(emb), k=1)
    scores = (emb @ emb.T)[i, j]
    same = ids[i] == ids[j]
    return scores[same], scores[~same]


def tar_at_far(genuine: npt.ArrayLike, impostor: npt.ArrayLike, far: float) -> tuple[float, float]:
    """(true-accept rate, threshold) at false-accept rate `far`.

    The threshold is the impostor score at rank floor(far x impostors) from the top, and acceptance is
    score > threshold: at most that many impostor pairs get through, whatever the ties.
    """
    gen = np.asarray(genuine, dtype=np.float64).ravel()
    imp = np.asarray(impostor, dtype=np.float64).ravel()
    if len(gen) == 0 or len(imp) == 0:
        raise ValueError("tar_at_far needs at least one genuine and one impostor score")
    if not 0.0 <= far < 1.0:
        raise ValueError(f"far must be in [0, 1), got {far}")
    allowed = int(np.floor(far * len(imp)))
    # the (allowed+1)-th largest impostor score; exactly `allowed` or fewer impostors lie strictly above it
    threshold = float(np.partition(imp, len(imp) - 1 - allowed)[len(imp) - 1 - allowed])
    return float(np.mean(gen > threshold)), threshold
