"""Fuzzing the model manifest loader (lfr_edge.models.load_manifest).

The manifest names every model file the unit may load and its sha256; the unit reads it at start and the
self-test reads it on the bench. Whatever the file holds, loading it must give a manifest whose every entry
is well formed, or raise `ModelError` naming the file (never a KeyError, TypeError or UnicodeDecodeError).
"""

from __future__ import annotations

import copy
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import fuzz, holds, mutated
from lfr_edge.models import Manifest, ModelError, load_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL = (REPO_ROOT / "models" / "manifest.toml").read_bytes()  # as `models/build.py --record` writes it
REAL_DOC: dict[str, Any] = tomllib.loads(REAL.decode())
WORK = Path(tempfile.mkdtemp(prefix="lfr-fuzz-manifest-"))


def load(text: bytes) -> Manifest:
    path = WORK / "manifest.toml"
    path.write_bytes(text)
    manifest = load_manifest(path)
    for model in manifest.models.values():
        assert model.source in manifest.sources
        for variant in model.variants:
            assert "/" not in variant.file and variant.file not in ("", ".", "..")
            assert variant.sha256 == "" or re.fullmatch(r"[0-9a-f]{64}", variant.sha256)
        if model.variants:
            model.variant("default")  # the default is one of its variants
    return manifest


def test_the_real_manifest_loads() -> None:
    assert set(load(REAL).models) == {"blazeface-short", "blazeface-full", "mobilefacenet", "yunet", "sface"}


@pytest.mark.parametrize(
    "text, named",
    [
        pytest.param(b"\xff\xfe", "not UTF-8", id="not-utf8"),
        pytest.param(b'source = "x"', "source: expected [[source]] tables", id="source-not-tables"),
        pytest.param(b"[[source]]\nname = 7", "name: expected a line of text", id="name-not-text"),
        pytest.param(b"model = [1, 2]", "model: expected [[model]] tables", id="model-not-tables"),
        pytest.param(b"a = " + b"[" * 2000 + b"]" * 2000, "brackets nested 2000 deep", id="nested"),
        pytest.param(b"a = " + b"9" * 5000, "not valid TOML", id="5000-digits"),
        pytest.param(
            REAL.replace(b'file = "blazeface-short.float.tflite"', b'file = "../../etc/passwd"'),
            "is not a name",
            id="file-escapes-the-folder",
        ),
        pytest.param(
            REAL.replace(b'default_variant = "float"', b'default_variant = "fp64"', 1),
            "default_variant 'fp64' is not one of its variants",
            id="unknown-default",
        ),
    ],
)
def test_a_malformed_manifest_is_a_model_error_naming_the_problem(text: bytes, named: str) -> None:
    """1,371 of 3,000 mutated manifests raised KeyError, TypeError or UnicodeDecodeError instead."""
    with pytest.raises(ModelError, match=re.escape(named)):
        load(text)


values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["", "../x", "a/b", "f" * 64, "F" * 64, "onnx", "x.onnx", "\x00"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)  # fmt: skip


@st.composite
def one_entry_changed(draw: st.DrawFn) -> bytes:
    """The real manifest with one key of one entry set to anything (or removed)."""
    doc = copy.deepcopy(REAL_DOC)
    kind = draw(st.sampled_from(["source", "model", "variant"]))
    if kind == "variant":
        model = draw(st.sampled_from(doc["model"]))
        entry = draw(st.sampled_from(model["variant"]))
    else:
        entry = draw(st.sampled_from(doc[kind]))
    key = draw(st.sampled_from([*entry, "extra"]))
    value = draw(values)
    if value is None:
        entry.pop(key, None)
    else:
        entry[key] = value
    return tomli_w.dumps(doc).encode()


@fuzz(350)
@given(mutated(REAL, max_mutations=8))
def test_mutated_manifests_load_or_are_a_model_error(text: bytes) -> None:
    holds(ModelError, lambda: load(text))


@fuzz(250)
@given(one_entry_changed())
def test_a_manifest_with_any_entry_changed_loads_or_is_a_model_error(text: bytes) -> None:
    holds(ModelError, lambda: load(text))
