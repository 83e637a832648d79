"""The ONNX exports of the three models (for `inference.backend = "onnx-tensorrt"`): they reproduce the
manifest's bytes, load in ONNX Runtime, compute what the float .tflite computes on real faces, and a unit
on the ONNX backend finds the same faces and embeddings as a LiteRT unit. The converter refuses what it
cannot convert, and no ONNX variant becomes a CPU unit's default."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from lfr_edge.config import Config, parse_config
from lfr_edge.models import ModelError, load_manifest, sha256_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "models"))

import build  # noqa: E402
import corpus  # noqa: E402
import fetch  # noqa: E402
import report  # noqa: E402
from graph_fixes import read_model, write_model  # noqa: E402
from onnx_export import OP, UnsupportedOp, tflite_to_onnx  # noqa: E402

MANIFEST_PATH = REPO / "models" / "manifest.toml"
MANIFEST = load_manifest(MANIFEST_PATH)
MODELS = ("blazeface-short", "blazeface-full", "mobilefacenet")
CPU: list[tuple[str, dict[str, str]]] = [
    ("CPUExecutionProvider", {})
]  # tests only: the unit runs TensorRT or CUDA, never the CPU provider
# What the build measured over the whole corpus (report.py explains the bounds): raw outputs within 2.3e-5
# of their scale, embedding cosine 1 - 2e-12. The bounds here are the build's.
MAX_REL_DIFF = report.ONNX_MAX_REL_DIFF
MIN_COSINE = report.ONNX_MIN_COSINE


def float_tflite(model: str) -> Path:
    """The float variant in the models cache (the export's input), verified against the manifest."""
    try:
        return MANIFEST.artifact(model, "float", build.default_cache())[0]
    except ModelError as exc:
        pytest.fail(f"{exc} (run `make models` first)")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three ONNX variants, exported here from the cached float variants."""
    folder = tmp_path_factory.mktemp("onnx-models")
    for model in MODELS:
        v = MANIFEST.model(model).variant("onnx")
        (folder / v.file).write_bytes(tflite_to_onnx(float_tflite(model).read_bytes(), model))
    return folder


def cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray(np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)))


def test_export_reproduces_the_recorded_onnx_artifacts(onnx_dir: Path) -> None:
    for model in MODELS:
        v = MANIFEST.model(model).variant("onnx")
        assert v.is_onnx
        assert sha256_file(onnx_dir / v.file) == v.sha256, f"{model}: the export is not the recorded artifact"


def test_converter_refuses_an_unsupported_op_and_names_it() -> None:
    model = read_model(float_tflite("blazeface-short").read_bytes())
    from ai_edge_litert import schema_py_generated as schema

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = OP.TANH
    code.version = 1
    model.operatorCodes.append(code)
    model.subgraphs[0].operators[-1].opcodeIndex = len(model.operatorCodes) - 1
    with pytest.raises(UnsupportedOp, match=r"blazeface-short: cannot export to ONNX: the graph uses TANH.*CONV_2D"):
        tflite_to_onnx(write_model(model), "blazeface-short")


def test_converter_refuses_a_fused_activation_it_does_not_convert() -> None:
    from ai_edge_litert import schema_py_generated as schema

    model = read_model(float_tflite("blazeface-short").read_bytes())
    model.subgraphs[0].operators[0].builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.TANH
    with pytest.raises(UnsupportedOp, match=r"blazeface-short: .* has fused activation TANH.*NONE and RELU"):
        tflite_to_onnx(write_model(model), "blazeface-short")


def test_a_manifest_whose_default_is_an_onnx_variant_is_refused(tmp_path: Path) -> None:
    text = MANIFEST_PATH.read_text(encoding="utf-8")
    head, tail = text.split('name = "mobilefacenet"\n')
    tail = re.sub(r'default_variant = "[^"]*"', 'default_variant = "onnx"', tail, count=1)
    (tmp_path / "manifest.toml").write_text(f'{head}name = "mobilefacenet"\n{tail}', encoding="utf-8")
    with pytest.raises(ModelError, match=r"'mobilefacenet': default_variant 'onnx' is an ONNX file"):
        load_manifest(tmp_path / "manifest.toml")


def test_report_never_picks_an_onnx_variant_as_default_even_when_fastest() -> None:
    fig = report.VariantFigures
    rep = report.Report()
    for name in report.DETECTORS:
        rep.figures[name] = {
            "float": fig(1000, 2.0, found_rate=0.98),
            "onnx": fig(1000, 0.1, runtime=report.ORT_CPU, max_abs_diff=0.0, max_rel_diff=0.0),
        }
    rep.figures[report.EMBEDDER] = {
        "float": fig(5000, 6.0, tar_aligned=0.82, tar_wild=0.86),
        "onnx": fig(5000, 0.1, runtime=report.ORT_CPU, cosine_mean=1.0, cosine_min=1.0),
    }
    report.check_close_to_float(rep)
    report.choose_defaults(rep)
    assert set(rep.defaults.values()) == {"float"}
    text = report.markdown(rep, {})
    assert "onnx" not in text.split("The unit's defaults")[0]  # not in the CPU variants' table
    assert "| mobilefacenet | onnx |" in text


def test_build_fails_when_the_onnx_export_disagrees_with_float() -> None:
    rep = report.Report()
    rep.figures["blazeface-full"] = {
        "onnx": report.VariantFigures(1000, 1.0, runtime=report.ORT_CPU, max_abs_diff=0.9, max_rel_diff=0.7)
    }
    with pytest.raises(fetch.BuildError, match=r"blazeface-full/onnx: the ONNX export disagrees.*0\.7"):
        report.check_close_to_float(rep)


def test_onnx_backend_runs_the_onnx_variants_and_refuses_a_tflite_one() -> None:
    from lfr_edge.vision.pipeline import model_variants

    cpu = parse_config({"inference": {"backend": "litert-cpu"}})
    jetson = dataclasses.replace(cpu, inference=dataclasses.replace(cpu.inference, backend="onnx-tensorrt"))
    assert model_variants(cpu) == ("default", "default")
    assert model_variants(cpu, "float") == ("default", "float")
    assert model_variants(jetson) == ("onnx", "onnx")
    with pytest.raises(ModelError, match=r"'onnx-tensorrt' runs the 'onnx' model variants, not .*'int8-static'"):
        model_variants(jetson, "int8-static")


@pytest.mark.faces
@pytest.mark.slow
def test_onnx_exports_agree_with_litert_float_on_real_faces(faces: Path, onnx_dir: Path) -> None:
    from lfr_edge.inference.litert import load_model
    from lfr_edge.inference.onnx_tensorrt import OnnxTensorRTBackend
    from lfr_edge.vision.detect import FULL_RANGE, SHORT_RANGE

    backend = OnnxTensorRTBackend(onnx_dir / "engines", explicit_providers=CPU)
    wild = corpus.wild_photos(faces, 24)
    aligned = corpus.aligned_photos(faces, 24)
    samples = {
        SHORT_RANGE.name: [corpus.detector_input(img, SHORT_RANGE.input_size) for img in wild.images],
        FULL_RANGE.name: [corpus.detector_input(img, FULL_RANGE.input_size) for img in wild.images],
        "mobilefacenet": [corpus.embedder_input(face) for face in aligned.images],
    }
    for model, inputs in samples.items():
        onnx_model = backend.load(onnx_dir / MANIFEST.model(model).variant("onnx").file)
        litert = load_model(float_tflite(model), threads=1)
        assert [(s.name, s.shape) for s in onnx_model.inputs] == [(s.name, s.shape) for s in litert.inputs]
        assert [(s.name, s.shape) for s in onnx_model.outputs] == [(s.name, s.shape) for s in litert.outputs]
        for x in inputs:
            for want, got in zip(litert.run(x), onnx_model.run(x), strict=True):
                scale = max(1.0, float(np.abs(want).max()))
                assert float(np.abs(got - want).max()) <= MAX_REL_DIFF * scale, model
                if model == "mobilefacenet":
                    assert cosines(want, got).min() >= MIN_COSINE


@pytest.mark.faces
@pytest.mark.slow
def test_a_unit_on_onnx_runtime_finds_the_same_faces_as_litert(faces: Path, onnx_dir: Path) -> None:
    from lfr_edge.inference.litert_cpu import LiteRTCpuBackend
    from lfr_edge.inference.onnx_tensorrt import OnnxTensorRTBackend
    from lfr_edge.vision.pipeline import ModelFiles, pipeline_from_files, resolve_model_files
    from lfr_tools.photos.image import read_image

    cfg = Config()
    jetson = dataclasses.replace(
        cfg,
        models=dataclasses.replace(cfg.models, dir=onnx_dir, detector="both", embedder="mobilefacenet"),
        inference=dataclasses.replace(cfg.inference, backend="onnx-tensorrt"),
    )
    files = resolve_model_files(jetson)  # the ONNX files, verified against the manifest
    emb_variant = MANIFEST.model("mobilefacenet").variant("onnx")
    assert files.embedder == onnx_dir / emb_variant.file
    assert files.full_range is not None and files.full_range.suffix == ".onnx"
    assert files.short_range is not None and files.short_range.suffix == ".onnx"
    assert files.model_id == f"mobilefacenet/onnx/{emb_variant.sha256[:12]}"
    onnx_unit = pipeline_from_files(
        files, OnnxTensorRTBackend(onnx_dir / "engines", explicit_providers=CPU), cfg.detect, cfg.quality
    )
    floats = ModelFiles(
        float_tflite("blazeface-full"), float_tflite("blazeface-short"), float_tflite("mobilefacenet"), "float"
    )
    litert_unit = pipeline_from_files(floats, LiteRTCpuBackend(threads=1), cfg.detect, cfg.quality)

    photos = corpus.spread(corpus.sorted_files(faces / "wild", "*/*.jpg"), 6)
    found = 0
    for path in photos:
        image = read_image(path)
        ours, theirs = onnx_unit.process(image), litert_unit.process(image)
        assert len(ours.faces) == len(theirs.faces), path.name
        for a, b in zip(ours.faces, theirs.faces, strict=True):
            assert np.abs(np.subtract(a.detection.box, b.detection.box)).max() < 0.5, path.name  # pixels
            assert abs(a.detection.score - b.detection.score) < 1e-4
            assert (a.embedding is None) == (b.embedding is None)
            if a.embedding is not None and b.embedding is not None:
                assert float(np.dot(a.embedding, b.embedding)) > 0.999
                found += 1
    assert found >= 5  # real faces were embedded, not just empty frames compared
