"""The onnx-cpu backend: real ONNX Runtime, the real built models (YuNet, SFace, an ONNX export), verified
against the manifest as the unit loads them."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from lfr_edge.config import Config, parse_config
from lfr_edge.inference import BackendUnavailable, create_backend
from lfr_edge.inference.onnx_cpu import OnnxCpuBackend, OrtCpuModel
from lfr_edge.models import ModelError, load_manifest
from lfr_edge.vision.pipeline import model_variants, resolve_model_files

REPO = Path(__file__).resolve().parents[1]
MANIFEST = load_manifest(REPO / "models" / "manifest.toml")


def onnx_cpu(**models: str) -> Config:
    return parse_config({"inference": {"backend": "onnx-cpu", "threads": 1}, "models": models})


def artifact(name: str) -> Path:
    path, _ = MANIFEST.artifact(name, "onnx", Config().models.dir)  # verified: `make models` built it
    return path


def test_the_config_key_selects_onnx_runtime_on_the_cpu_with_its_threads() -> None:
    backend = create_backend(onnx_cpu().inference)
    assert isinstance(backend, OnnxCpuBackend)
    assert backend.describe().startswith("onnx-cpu (onnxruntime 1.") and "1 threads" in backend.describe()
    model = backend.load(artifact("sface"))
    assert model._session.get_session_options().intra_op_num_threads == 1


def test_outputs_are_the_runtimes_own_and_every_bound_buffer_is_zeroed_after_a_run() -> None:
    import onnxruntime

    model = OnnxCpuBackend(threads=1).load(artifact("sface"))
    face = np.random.default_rng(1).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    kept = face.copy()
    (embedding,) = model.run(face)
    plain = onnxruntime.InferenceSession(str(artifact("sface")), providers=["CPUExecutionProvider"])
    assert np.array_equal(embedding, plain.run(None, {"data": face})[0])
    assert np.array_equal(face, kept)  # the caller's input is read, not touched
    ((_, ins, outs),) = model._bound.values()
    assert embedding.any() and not any(buffer.any() for buffer in (*ins, *outs))
    as_float64 = face.astype(np.float64)  # converted into the backend's input buffer, then zeroed
    assert np.allclose(model.run(as_float64)[0], embedding) and not ins[0].any()  # type: ignore[arg-type]


def test_a_symbolic_input_gets_output_buffers_per_input_size() -> None:
    model = OnnxCpuBackend(threads=1).load(artifact("yunet"))
    assert model.inputs[0].shape == (1, 3, -1, -1)
    small = model.run(np.zeros((1, 3, 64, 96), np.float32))
    large = model.run(np.zeros((1, 3, 384, 640), np.float32))
    assert small[0].shape == (1, 8 * 12, 1) and large[0].shape == (1, 48 * 80, 1)  # cls_8: H/8 x W/8
    assert len(model._bound) == 2
    with pytest.raises(ValueError, match=r"input 'input' wants shape \(1, 3, -1, -1\), got \(3, 64, 96\)"):
        model.run(np.zeros((3, 64, 96), np.float32))


def test_a_file_that_is_not_an_onnx_model_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"broken\.onnx: ONNX Runtime cannot load this model"):
        OnnxCpuBackend(threads=1).load(bad)


def test_without_onnxruntime_the_backend_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match=r"onnxruntime is missing.*pip install onnxruntime"):
        create_backend(onnx_cpu().inference)


def test_the_unit_runs_yunet_and_sface_on_onnx_cpu_and_names_sface_in_its_model_id() -> None:
    cfg = onnx_cpu(detector="yunet", embedder="sface")
    assert model_variants(cfg) == ("onnx", "onnx")
    files = resolve_model_files(cfg)
    sha = MANIFEST.model("sface").variant("onnx").sha256
    assert files.model_id == f"sface/onnx/{sha[:12]}"
    assert files.yunet == artifact("yunet") and files.full_range is None and files.short_range is None
    assert isinstance(create_backend(cfg.inference).load(files.embedder), OrtCpuModel)


REFUSED = [({"embedder": "sface"}, "sface"), ({"detector": "yunet", "embedder": "mobilefacenet"}, "yunet")]


@pytest.mark.parametrize(("models", "named"), REFUSED)
def test_an_onnx_only_model_on_litert_is_refused_with_the_backend_to_set(models: dict[str, str], named: str) -> None:
    cfg = dataclasses.replace(
        onnx_cpu(**models), inference=parse_config({"inference": {"backend": "litert-cpu"}}).inference
    )
    with pytest.raises(ModelError, match=f'{named} exists only as ONNX: set inference.backend = "onnx-cpu"'):
        resolve_model_files(cfg)


def test_building_a_backend_holds_numpys_blas_to_one_thread() -> None:
    """The watchlist search is numpy's; left at one thread per core, BLAS's idle threads spin after each
    search and take CPU the models need. A fresh process, so that nothing else set the limit first."""
    import json
    import os
    import subprocess

    probe = (
        "import json; from threadpoolctl import threadpool_info; from lfr_edge.config import Config; "
        "from lfr_edge.inference import create_backend; "
        "blas = lambda: [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']; "
        "before = blas(); create_backend(Config().inference); print(json.dumps([before, blas()]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    before, after = json.loads(out.stdout.splitlines()[-1])
    assert len(before) == 1 and after == [1]  # numpy's one BLAS, at one thread
