"""A trial's test watchlist from a simulator plan (tests/test_evaluate.py, tests/test_docs.py): the plan's
watchlisted people, enrolled from photos no walker uses, and people who never walk past (decoys: an alert
naming one is a false alert)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lfr_hwsim.plan import ScenePlan

DECOYS = 5


def write_trial_watchlist(plan: ScenePlan, folder: Path, decoys: int = DECOYS) -> tuple[set[str], set[str]]:
    """Photos and subjects.csv in `folder`; returns (listed subject ids who walk past, decoy subject ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    faces = Path(plan.faces_dir)
    walking = {w.identity for w in plan.walkers}
    absent = [p.name for p in sorted(faces.iterdir()) if p.is_dir() and p.name not in walking][:decoys]
    rows = ["subject_id,category,photos,reference"]
    for identity in [*plan.watchlisted, *absent]:
        listed = identity in plan.watchlisted
        photos = plan.enrolment_photos(identity) if listed else sorted((faces / identity).glob("*.jpg"))[:2]
        names = []
        for photo in photos:
            shutil.copy(photo, folder / f"{identity}-{photo.name}")
            names.append(f"{identity}-{photo.name}")
        rows.append(f"S-{identity},{'wanted' if listed else 'decoy'},{';'.join(names)},trial")
    (folder / "subjects.csv").write_text("\n".join(rows) + "\n")
    return {f"S-{i}" for i in plan.watchlisted}, {f"S-{i}" for i in absent}
