"""TAR at FAR and the genuine/impostor split, on small hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from lfr_tools.metrics import pair_scores, tar_at_far


def test_pair_scores_splits_all_unordered_pairs_by_label() -> None:
    emb = np.eye(4, dtype=np.float32)
    emb[1] = emb[0]  # rows 0 and 1 identical
    genuine, impostor = pair_scores(emb, ["a", "a", "b", "b"])
    assert sorted(genuine.tolist()) == [0.0, 1.0]  # (0,1) equal, (2,3) orthogonal
    assert len(impostor) == 4 and len(genuine) + len(impostor) == 6


def test_pair_scores_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        pair_scores(np.eye(3), [1, 2])


def test_tar_at_far_threshold_lets_through_at_most_far_of_impostors() -> None:
    impostor = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    genuine = np.array([0.9985, 0.999, 0.5, 1.0])
    tar, threshold = tar_at_far(genuine, impostor, 1e-3)
    assert threshold == pytest.approx(0.998)  # one impostor (0.999) above it
    assert np.mean(impostor > threshold) <= 1e-3
    assert tar == pytest.approx(0.75)


def test_tar_at_far_with_tied_impostors_never_exceeds_far() -> None:
    impostor = np.full(100, 0.5)
    tar, threshold = tar_at_far([0.5, 0.6], impostor, 0.1)
    assert threshold == 0.5 and tar == 0.5


def test_tar_at_far_rejects_empty_scores_and_bad_far() -> None:
    with pytest.raises(ValueError):
        tar_at_far([], [0.1], 1e-3)
    with pytest.raises(ValueError):
        tar_at_far([0.2], [0.1], 1.5)
