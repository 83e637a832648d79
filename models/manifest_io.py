"""Write models/manifest.toml back after `build.py --record` (same entries, new hashes and defaults)."""

from __future__ import annotations

import json

from lfr_edge.models import Manifest

HEADER = """\
# The models of lfr-edge: where each one comes from (registry package, exact version, sha256), its
# input/output contract, and the sha256 of every artifact `models/build.py` makes from it.
# Edit sources, contracts and variant lists by hand; `models/build.py --record` rewrites the artifact
# hashes and each model's default_variant (the measured choice, see build-report.md in the cache).
# The unit refuses any model file whose sha256 is not recorded here.
"""


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def render_manifest(manifest: Manifest, artifact_hashes: dict[tuple[str, str], str], defaults: dict[str, str]) -> str:
    out = [HEADER]
    for s in manifest.sources.values():
        out += [
            "[[source]]",
            f"name = {_s(s.name)}",
            f"kind = {_s(s.kind)}",
            f"package = {_s(s.package)}",
            f"version = {_s(s.version)}",
            f"sha256 = {_s(s.sha256)}",
            "",
        ]
    for m in manifest.models.values():
        out += [
            "[[model]]",
            f"name = {_s(m.name)}",
            f"source = {_s(m.source)}",
            f"path = {_s(m.path)}",
            f"sha256 = {_s(m.sha256)}",
            f"inputs = {_s(m.inputs)}",
            f"outputs = {_s(m.outputs)}",
            f"default_variant = {_s(defaults.get(m.name, m.default_variant))}",
            *([f"licence = {_s(m.licence)}"] if m.licence else []),
            "",
        ]
        for v in m.variants:
            out += [
                "[[model.variant]]",
                f"name = {_s(v.name)}",
                f"file = {_s(v.file)}",
                f"sha256 = {_s(artifact_hashes.get((m.name, v.name), v.sha256))}",
                f"description = {_s(v.description)}",
                "",
            ]
    return "\n".join(out)
