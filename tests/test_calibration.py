"""The calibration table (lfr_contracts.calibration), as the models build writes it (models/calibrate.py), and
`lfr-watchlist build --false-alerts`, which sets a watchlist's threshold from it and the list's size."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import bundle, calibration
from lfr_contracts.calibration import (
    CalibrationError,
    CalibrationTable,
    ScoreRate,
    alert_band,
    one_in,
    parse_rate,
    per_passer_by,
)
from lfr_edge import keyfiles
from lfr_edge.config import Config
from lfr_edge.vision.pipeline import resolve_model_files
from lfr_tools.command_centre import cli
from lfr_tools.command_centre.enrol import Enrolment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "models"))
import calibrate  # noqa: E402  (models/calibrate.py: the writer the build runs)

MODEL = "test-embedder/float/000000000000"


def synthetic(identities: int = 60, per: int = 5, dim: int = 32, seed: int = 1) -> CalibrationTable:
    """The build's writer on embeddings of known structure: each identity a direction, each photo near it."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim))
    emb = np.repeat(centres, per, axis=0) + 0.6 * rng.normal(size=(identities * per, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = [str(i) for i in range(identities) for _ in range(per)]
    return calibrate.table(MODEL, f"{identities} synthetic identities", emb.astype(np.float32), labels)


TABLE = synthetic()


def brute_force(threshold: float) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(60, 32))
    emb = np.repeat(centres, 5, axis=0) + 0.6 * rng.normal(size=(300, 32))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.repeat(np.arange(60), 5)
    i, j = np.triu_indices(300, 1)
    scores = np.sum(emb[i] * emb[j], axis=1)
    same = labels[i] == labels[j]
    return float(np.mean(scores[~same] >= threshold)), float(np.mean(scores[same] >= threshold))


def test_the_table_counts_every_pair_as_the_matcher_accepts_them() -> None:
    assert TABLE.impostor_pairs == 300 * 299 // 2 - 60 * 10 and TABLE.genuine_pairs == 600
    for grid_score in (0.0, 0.2, 0.35, 0.5):
        far, gar = brute_force(grid_score)
        assert TABLE.far(grid_score) == pytest.approx(far, abs=1e-9)
        assert TABLE.genuine_accept_rate(grid_score) == pytest.approx(gar, abs=1e-9)
    assert TABLE.far(TABLE.impostor_max + 1e-4) == 0.0


def test_threshold_for_a_rate_is_the_lowest_score_that_keeps_it() -> None:
    for far in (1e-2, 1e-3, 1e-4):
        choice = TABLE.threshold_for(far)
        assert choice.supported and choice.far <= far
        assert TABLE.far(choice.threshold - 0.005) > far  # one grid step lower lets more through
        assert choice.genuine_accept_rate == TABLE.genuine_accept_rate(choice.threshold)


def test_a_rate_below_the_tables_resolution_is_flagged_with_the_bound_the_data_gives() -> None:
    choice = TABLE.threshold_for(0.1 / TABLE.impostor_pairs)
    assert not choice.supported
    assert choice.threshold > TABLE.impostor_max and choice.far == 0.0
    assert choice.far_bound == pytest.approx(3 / TABLE.impostor_pairs)


def test_round_trip_and_bands() -> None:
    decoded = calibration.decode(calibration.encode([TABLE]))
    assert decoded == {MODEL: TABLE}
    assert TABLE.band(-0.5).startswith("weak")
    assert TABLE.band(TABLE.impostor_max + 0.01).startswith("very strong")
    bands = [TABLE.band(s) for s in np.arange(-0.2, 1.0, 0.01)]
    order = ["weak", "possible", "likely", "strong", "very strong"]
    ranks = [max(i for i, w in enumerate(order) if b.startswith(w)) for b in bands]
    assert ranks == sorted(ranks)  # a higher score never reads as a weaker band


def test_rates_are_read_as_people_say_them() -> None:
    assert parse_rate("1 in 6000") == pytest.approx(1 / 6000)
    assert parse_rate(" 1 in 6,000 ") == pytest.approx(1 / 6000)
    for bad in ("6000", "1/6000", "1 in 0", "2 in 6000", "1 in -5", ""):
        with pytest.raises(CalibrationError, match=r"1 in N|between"):
            parse_rate(bad)
    assert per_passer_by(1e-6, 1000) == pytest.approx(1000 * 1e-6, rel=1e-3)


# The handset's band: an alert's score in words, from the rate the unit's table gave it --------------------


def test_the_band_says_how_often_people_on_no_list_score_this_high() -> None:
    score = TABLE.threshold_for(1e-4).threshold
    far = TABLE.far(score)
    assert 0 < far <= 1e-4
    assert alert_band(score, 0.25, TABLE.rate(score, 1_200, 2_400)) == (
        f"about {one_in(far)} people on no list score this high against a watchlist photo; with 1,200 subjects "
        f"(2,400 photos), {one_in(per_passer_by(far, 2_400))} passers-by"
    )
    one = alert_band(score, 0.25, TABLE.rate(score, 1, 1))
    assert one.endswith(f"with 1 subject, {one_in(far)} passers-by")
    weak = alert_band(0.0, 0.0, TABLE.rate(0.0, 1_200, 1_200))  # nearly everyone scores that high against one
    assert weak.endswith("with 1,200 subjects, 100% of passers-by")


def test_a_score_no_impostor_pair_reached_gets_the_bound_the_corpus_gives() -> None:
    band = alert_band(0.99, 0.5, TABLE.rate(0.99, 10, 10))
    bound = 3 / TABLE.impostor_pairs
    assert band.startswith(f"no two different people of {TABLE.impostor_pairs:,} calibration pairs scored this high")
    assert f"rarer than {one_in(bound)} per watchlist photo (95% bound)" in band
    assert f"with 10 subjects, rarer than {one_in(per_passer_by(bound, 10))} passers-by" in band


def test_a_higher_score_never_reads_as_more_common() -> None:
    scores = np.arange(-0.2, 1.0, 0.01)
    rates = [TABLE.rate(float(s), 100, 150) for s in scores]
    fars = [r.false_accept_rate for r in rates]
    assert fars == sorted(fars, reverse=True) and fars[0] > 0.5 and fars[-1] == 0


def test_without_a_rate_the_band_says_not_calibrated_and_only_the_margin() -> None:
    assert alert_band(0.52, 0.5, None) == "not calibrated: just above the threshold, check carefully"
    assert alert_band(0.6, 0.5, None) == "not calibrated: clearly above the threshold"
    assert alert_band(0.9, 0.5, None) == "not calibrated: far above the threshold"


def test_a_rate_out_of_its_range_is_refused() -> None:
    TABLE.rate(0.3, 1, 1).check()
    for bad in (ScoreRate(0.5, 0, 1, 1), ScoreRate(1e-9, 100, 1, 1), ScoreRate(0.1, 100, 2, 1)):
        with pytest.raises(CalibrationError):
            bad.check()


# lfr-watchlist build --false-alerts ---------------------------------------------------------------------


class CountingEnroller:
    """One fixed unit vector per photo: the calibration plumbing does not depend on what was enrolled."""

    model_id = MODEL

    def enrol(self, image_rgb: npt.NDArray[np.uint8]) -> Enrolment:
        return Enrolment(np.ones(32, np.float32) / np.sqrt(32), b"\xff\xd8ref", "")


def build_argv(tmp_path: Path, subjects: int, *rate: str) -> list[str]:
    import cv2

    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / calibration.CALIBRATION_FILE).write_bytes(calibration.encode([TABLE]))
    (tmp_path / "unit.toml").write_text(f'[models]\ndir = "{tmp_path / "models"}"\n')
    cv2.imwrite(str(tmp_path / "p.png"), np.full((40, 40, 3), 200, np.uint8))
    rows = "".join(f"S-{i},wanted,p.png,r\n" for i in range(subjects))
    (tmp_path / "s.csv").write_text("subject_id,category,photos,reference\n" + rows)
    if not (tmp_path / "cc").exists():
        cli.main(["keygen", "--out", str(tmp_path / "cc")])
        keyfiles.save_public_key(tmp_path / "van-1.pub", X25519PrivateKey.generate().public_key())
    return [
        "build", "--photos", str(tmp_path), "--subjects", str(tmp_path / "s.csv"), "--deployment", "D",
        "--valid-from", "2036-01-01T00:00Z", "--valid-until", "2036-01-02T00:00Z", *rate,
        "--sign-key", str(tmp_path / "cc" / "command-centre.key"), "--unit-key", str(tmp_path / "van-1.pub"),
        "--out", str(tmp_path / "van-1.lfrwl"), "--config", str(tmp_path / "unit.toml"),
    ]  # fmt: skip


def built_threshold(tmp_path: Path) -> float:
    envelope = bundle.read_envelope((tmp_path / "van-1.lfrwl").read_bytes(), 1 << 30)
    return bundle.parse_bundle_header(envelope.header).threshold


def run_build(argv: list[str]) -> int:
    args = cli.build_parser().parse_args(argv)
    return cli.cmd_build(args, CountingEnroller())


def test_false_alerts_sets_the_threshold_for_the_lists_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_build(build_argv(tmp_path, 3, "--false-alerts", "1 in 100")) == 0
    out = capsys.readouterr().out
    expected = TABLE.threshold_for(0.01 / 3)
    assert built_threshold(tmp_path) == expected.threshold
    assert f"threshold {expected.threshold:g} for 3 subjects" in out
    assert "expected false alerts: 1 in " in out and "listed people found: about" in out
    # a longer list needs a stricter threshold for the same rate per passer-by
    assert run_build(build_argv(tmp_path, 30, "--false-alerts", "1 in 100")) == 0
    assert built_threshold(tmp_path) > expected.threshold


def test_a_rate_the_corpus_cannot_resolve_is_said_honestly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_build(build_argv(tmp_path, 1000, "--false-alerts", "1 in 6000")) == 0
    captured = capsys.readouterr()
    assert "the corpus cannot show this" in captured.err and f"{TABLE.impostor_pairs:,} impostor pairs" in captured.err
    assert built_threshold(tmp_path) > TABLE.impostor_max
    assert "at most 1 in" in captured.out and "95%" in captured.out


def test_threshold_overrides_and_warns_when_worse_than_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_build(build_argv(tmp_path, 3, "--false-alerts", "1 in 1000", "--threshold", "0.2")) == 0
    captured = capsys.readouterr()
    assert built_threshold(tmp_path) == 0.2
    assert "warning: --threshold 0.2 overrides" in captured.err and "worse than the 1 in 1,000 asked" in captured.err
    assert run_build(build_argv(tmp_path, 3, "--false-alerts", "1 in 10", "--threshold", "0.9")) == 0
    assert "warning" not in capsys.readouterr().err


def test_without_a_table_false_alerts_names_the_fix_and_threshold_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = build_argv(tmp_path, 2, "--false-alerts", "1 in 6000")
    (tmp_path / "models" / calibration.CALIBRATION_FILE).unlink()
    with pytest.raises(cli.CliError, match="make models"):
        run_build(argv)
    argv = build_argv(tmp_path, 2, "--threshold", "0.6")
    (tmp_path / "models" / calibration.CALIBRATION_FILE).unlink()
    assert run_build(argv) == 0 and "rates unknown" in capsys.readouterr().out
    with pytest.raises(cli.CliError, match="--false-alerts"):
        run_build(build_argv(tmp_path, 2))


# The table the models build wrote for the unit's own embedder ------------------------------------------------


@pytest.mark.faces
def test_the_models_build_wrote_a_table_for_the_units_embedder(unit_config: Config) -> None:
    model_id = resolve_model_files(unit_config).model_id
    path = unit_config.models.dir.expanduser() / calibration.CALIBRATION_FILE
    tables = calibration.decode(path.read_bytes())
    table = tables[model_id]
    assert table.impostor_pairs > 600_000 and table.genuine_pairs > 5_000  # all pairs of 144 identities' faces
    t3, t4 = table.threshold_for(1e-3), table.threshold_for(1e-4)
    assert 0.3 < t3.threshold < t4.threshold < 0.8
    assert t3.genuine_accept_rate > t4.genuine_accept_rate > 0.5


def test_the_build_calibrates_again_when_any_embedder_model_id_lacks_a_table(tmp_path: Path) -> None:
    """Every model id a unit can run (each MobileFaceNet variant and SFace, as the pipeline names them) needs a
    table: a cache missing one is not current, and `models/build.py` measures them again."""
    from lfr_edge.models import load_manifest

    manifest = load_manifest(REPO / "models" / "manifest.toml")
    ids = calibrate.model_ids(manifest)
    default_id = resolve_model_files(Config()).model_id  # the default unit's, as its pipeline names it
    assert default_id in ids and default_id.startswith("sface/onnx/")
    assert {i.split("/")[0] for i in ids} == {"mobilefacenet", "sface"}
    tables = [dataclasses.replace(TABLE, model_id=i) for i in sorted(ids)]
    (tmp_path / calibration.CALIBRATION_FILE).write_bytes(calibration.encode(tables))
    assert calibrate.is_current(manifest, tmp_path)
    without_sface = [t for t in tables if not t.model_id.startswith("sface/")]
    (tmp_path / calibration.CALIBRATION_FILE).write_bytes(calibration.encode(without_sface))
    assert not calibrate.is_current(manifest, tmp_path)
