"""The README's commands outside the deployment table, as written, and the inventory of every documented
command with the test that runs it (issue 14: a documentation change that breaks a command breaks the suite,
and no documented command is left untested silently).

The README's simulator block runs in a folder laid out like a checkout (`.venv` beside `../shared/faces`),
so its relative paths mean what they mean to a reader in the repository root, and its outputs land there.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from doc_runner import sh_blocks, table_commands

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SIMULATOR_BLOCK = "Simulator, benchmarks, offline tools"

# Every command of the README's sh blocks and "Other targets", docs/config.md and the unit file, with the test
# that runs it as written (file::test), or why none does. The README's deployment table, docs/broker.md and
# docs/board-setup.md are run block by block by tests/test_docs.py, which fails on a block it does not run.
RUN_BY = {
    "make demo": "run: test_demo_timeline.py::test_make_demo_writes_a_report_and_a_timeline_a_non_engineer_can_read",
    "make test": "not a test: .ci/run runs it (the CI check)",
    "make models": "not a test: `make test` runs it first (its prerequisite), so .ci/run does",
    'mkdir -p "$TRIAL"': "run: test_docs.py::test_a_trial_as_the_readme_writes_it",
    (
        'lfr-hwsim scene plan --faces "$FACES/wild" --seed 5 --duration 12 --fps 10 --watchlisted 1 --out '
        '"$TRIAL/plan.json"'
    ): ("run: test_docs.py::test_a_trial_as_the_readme_writes_it"),
    'lfr-hwsim scene render --plan "$TRIAL/plan.json" --frames "$TRIAL/frames"': (
        "run: test_docs.py::test_a_trial_as_the_readme_writes_it"
    ),
    'lfr-evaluate --frames "$TRIAL/frames" --watchlist "$TRIAL/watchlist" --fps 10 --false-alerts "1 in 6000" --json '
    '"$TRIAL/result.json"': "run: test_docs.py::test_a_trial_as_the_readme_writes_it",
    "make system-deps": "not a test: `make test` runs it first (its prerequisite), so .ci/run does",
    "make demo HANDSET=app": (
        "make -n: test_readme_commands.py::test_the_make_targets_run_the_commands_the_readme_names (the recipe "
        "passes --handset app; test_handset_app.py runs that demo)"
    ),
    ".venv/bin/lfr-hwsim demo --faces ../shared/faces --duration 60 --handset app": (
        "run: test_handset_app.py::test_the_demo_with_the_officers_screen (with --duration 40)"
    ),
    ".venv/bin/python -m lfr_bench.handset_app --alerts 30": (
        "not run: a benchmark (a minute of a real daemon and browser); test_handset_app.py runs the same path"
    ),
    "make bench": "not run: minutes long, and it installs the peer face_recognition from the internet",
    "make bench QUICK=1": "not run: installs the peer face_recognition from the internet",
    "make demo DURATION=20": (
        "make -n: test_readme_commands.py::test_the_make_targets_run_the_commands_the_readme_names"
    ),
    "make test-fast": (
        "make -n: test_readme_commands.py::test_the_make_targets_run_the_commands_the_readme_names (running it "
        "inside the suite would run the suite)"
    ),
    'make demo FAULTS="8:broker-restart=4, 15:camera-stall=3, 20:camera-disconnect=3, 25:beacon-unplug=3, '
    '30:watchlist-corrupt, 32:watchlist-replay, 35:handset-offline=5, 40:watchlist-expire=3" DURATION=50': (
        "make -n: test_readme_commands.py::test_the_make_targets_run_the_commands_the_readme_names (the script is "
        "parsed as make passes it; the faults themselves run in test_faults.py)"
    ),
    ".venv/bin/lfr-hwsim demo --faces ../shared/faces --duration 60": (
        "make -n: test_readme_commands.py::test_the_make_targets_run_the_commands_the_readme_names (what `make "
        "demo` runs, which test_demo_timeline.py runs)"
    ),
    ".venv/bin/lfr-hwsim scene preview --time 5 --out frame.png --boxes": (
        "run: test_readme_commands.py::test_the_readme_simulator_block_as_written"
    ),
    ".venv/bin/python -m lfr_bench --quick 1": "not run: what `make bench QUICK=1` runs (see there)",
    ".venv/bin/lfr-photos embed --list photos.txt --npz out.npz": (
        "run: test_readme_commands.py::test_the_readme_simulator_block_as_written"
    ),
    ".venv/bin/lfr-photos summary ../shared/faces/wild": (
        "run: test_readme_commands.py::test_the_readme_simulator_block_as_written"
    ),
    ".venv/bin/python -m lfr_tools.config_doc --out docs/config.md": (
        "run: test_config.py::test_docs_config_md_is_what_the_declarations_generate"
    ),
    ".venv/bin/python -m lfr_tools.config_doc --check docs/config.md": (
        "run: test_config.py::test_docs_config_md_is_what_the_declarations_generate"
    ),
    "/opt/lfr-edge/.venv/bin/lfr-edge run --config /etc/lfr-edge/config.toml": (
        "run: test_systemd_unit.py::test_the_installed_units_commands_bring_a_provisioned_unit_to_ready_reload_and_stop"
    ),
    "/bin/kill -HUP $MAINPID": (
        "run: test_systemd_unit.py::test_the_installed_units_commands_bring_a_provisioned_unit_to_ready_reload_and_stop"
    ),
}


def documented_commands() -> list[str]:
    """The README's sh-block lines and inline `make ...` commands, docs/config.md's commands, the unit's Exec lines."""
    readme = README.read_text()
    found = [re.sub(r"\s+#.*$", "", line).strip() for b in sh_blocks(README) for line in b.lines]
    found = [c for c in found if c and not re.match(r"^[A-Z_]+=", c)]  # the deployment's variables
    found += re.findall(r"`(make [^`]+)`", " ".join(readme.split()))
    config_md = (REPO / "docs" / "config.md").read_text()
    found += re.findall(r"`(\.venv/bin/python -m [^`]+)`", config_md)
    unit = (REPO / "systemd" / "lfr-edge.service").read_text()
    found += re.findall(r"^Exec\w+=(.+)$", unit, flags=re.MULTILINE)
    return list(dict.fromkeys(found))


def test_every_documented_command_names_the_test_that_runs_it() -> None:
    """A command added to the README, docs/config.md or the unit file must be added here with its test."""
    assert set(documented_commands()) == set(RUN_BY), (
        f"documented, not listed: {sorted(set(documented_commands()) - set(RUN_BY))}; "
        f"listed, no longer documented: {sorted(set(RUN_BY) - set(documented_commands()))}"
    )
    for command, where in RUN_BY.items():
        if where.startswith("not "):
            continue
        named = re.search(r"(\w+\.py)::(\w+)", where)
        assert named is not None, f"{command}: {where} names no test"
        test_file, test_name = named.groups()
        assert f"def {test_name}(" in (REPO / "tests" / test_file).read_text(), f"{command}: {where} is gone"
    assert table_commands(README, "## A deployment, step by step"), "the deployment table is run by test_docs"


def checkout_like(tmp_path: Path, faces: Path) -> Path:
    """A folder where the README's relative paths resolve: ./.venv and ../shared/faces."""
    root = tmp_path / "lfr-edge"
    root.mkdir()
    (root / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "faces").symlink_to(faces)
    return root


@pytest.mark.slow
def test_the_readme_simulator_block_as_written(tmp_path: Path, faces: Path) -> None:
    (block,) = [b for b in sh_blocks(README) if b.heading == SIMULATOR_BLOCK]
    root = checkout_like(tmp_path, faces)
    photos = sorted((faces / "wild").glob("*/*.jpg"))[:3]
    (root / "photos.txt").write_text("".join(f"{p}\n" for p in photos))  # the reader's own list of photos
    ran = []
    for line in block.lines:
        if RUN_BY[re.sub(r"\s+#.*$", "", line).strip()].startswith("run: test_readme_commands.py::test_the_readme"):
            done = subprocess.run(["bash", "-c", line], cwd=root, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            ran.append((line.split()[1], done.stdout))
    assert [name for name, _ in ran] == ["scene", "embed", "summary"]
    import cv2

    frame = cv2.imread(str(root / "frame.png"))
    assert frame is not None and frame.shape == (720, 1280, 3)
    with np.load(root / "out.npz") as npz:
        assert any(a.ndim == 2 and a.shape[0] == len(photos) for a in npz.values())
    summary = dict(ran)["summary"]
    counts = re.search(r"^photos: (\d+), with an embedded face: (\d+)", summary, flags=re.MULTILINE)
    assert counts is not None and int(counts[2]) > 0, summary[-2000:]


def make_dry_run(*args: str) -> str:
    """What `make -n` prints, as a reader's shell would see it (not as a sub-make of `make test`, which would add
    "Entering directory" lines and pass its own flags down)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    command = ["make", "--no-print-directory", "-n", *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_make_targets_run_the_commands_the_readme_names() -> None:
    """`make -n` shows what each documented target runs: the README's simulator line is `make demo`'s recipe,
    DURATION and FAULTS reach the demo as given, and test-fast leaves the slow tests out."""
    demo = make_dry_run("demo").splitlines()[-1]
    assert re.fullmatch(r'\.venv/bin/lfr-hwsim demo --faces "[^"]+" --duration 60 --out demo-results *', demo), demo
    assert ".venv/bin/lfr-hwsim demo --faces ../shared/faces --duration 60" in README.read_text()
    assert "--duration 20 --out demo-results" in make_dry_run("demo", "DURATION=20").splitlines()[-1]
    faults = next(c for c in RUN_BY if "FAULTS=" in c)
    script = re.search(r'FAULTS="([^"]+)"', faults)
    assert script is not None
    fault_run = make_dry_run("demo", f"FAULTS={script[1]}", "DURATION=50").splitlines()[-1].rstrip()
    assert fault_run.endswith(f'--duration 50 --out demo-results --faults "{script[1]}"'), fault_run
    from lfr_hwsim.faults import parse_script

    assert len(parse_script(script[1])) == 8
    assert '-m "not slow"' in make_dry_run("test-fast").splitlines()[-1]
    assert make_dry_run("demo", "HANDSET=app").splitlines()[-1].rstrip().endswith("--handset app")
