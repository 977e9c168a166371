"""ONNX export (deploy.export) and the ONNX Runtime wrapper (deploy.runtime) on tiny models in the checkpoint format.

Models: resnet18 on 64×32 inputs, feature_dim 32, 5 classes, random weights with non-trivial BatchNorm statistics.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from deploy import export as ex
from deploy.export import ExportError, export_checkpoint, export_module
from deploy.runtime import OnnxFeatureModel
from engine.checkpoint import FORMAT_VERSION, CheckpointError, save_atomic
from engine.errors import UserError
from engine.params import parse_params
from networks.factory import build_model

ROOT = Path(__file__).resolve().parent.parent
H, W, DIM, CLASSES = 64, 32, 32, 5
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_train_params(task: str, batches_dir: str = "unused", **model_params) -> dict:
    params = {"task": task, "batches_dir": batches_dir, "img_h": H, "img_w": W, "num_preprocess_workers": 0,
              "model_params": {"model": "resnet18", "feature_dim": DIM, "dropout": 0.0, **model_params},
              "evaluation_params": {"type": "market_evaluate" if task == "reid" else "classification_evaluate"}}
    if task == "classification":
        params["tri_loss_params"] = {"margin": 0.0}
    return params


def save_tiny_checkpoint(path: Path, task: str = "reid", num_classes: int = CLASSES, seed: int = 0,
                         params: dict | None = None, weights_params: dict | None = None) -> Path:
    """A checkpoint laid out as engine.trainer.Trainer.checkpoint_dict writes it. `weights_params` (default: the same
    as `params`) builds the model whose weights are stored, to make a params/weights mismatch."""
    torch.manual_seed(seed)
    parsed = parse_params(params or tiny_train_params(task))
    weights_from = parse_params(weights_params) if weights_params else parsed
    model = build_model(weights_from.task, weights_from.model_params, num_classes, imagenet_pretrain=False)
    with torch.no_grad():  # trained-looking BatchNorm statistics, so eval mode is not an identity
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
        if task == "classification":
            model.classifier.weight.normal_(0, 0.05)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    save_atomic({
        "format_version": FORMAT_VERSION,
        "task": parsed.task,
        "params": parsed.model_dump(mode="json", exclude={"tri_loss_margin", "tri_loss_lambda_cls"}),
        "task_state": {"num_classes": num_classes, "class_names": [f"class{i}" for i in range(num_classes)]},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 3, "step": 0, "global_step": 30,
        "best": {"metric": "rank1", "value": 0.5, "epoch": 2},
        "rng_torch": torch.get_rng_state(),
    }, path)
    return path


def torch_model(path: Path):
    model, _, _ = ex.load_model_from_checkpoint(path)
    return model


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def reid_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reid")
    ckpt = save_tiny_checkpoint(tmp / "model_best.pth", "reid")
    out = tmp / "reid.onnx"
    [report] = export_checkpoint(ckpt, out, batch_check=(1, 5))
    return ckpt, out, report


# ---------------------------------------------------------------------------------------------------------------------
# export


def test_reid_export_parity_metadata_and_dynamic_batch(reid_export):
    ckpt, out, report = reid_export
    assert report.passed and out.is_file() and report.file_bytes == out.stat().st_size
    assert [r.batch_size for r in report.parity] == [1, 5]
    for r in report.parity:
        assert r.compared == "features_normalized"
        assert r.max_abs_diff <= TOL and r.mean_cosine > 0.999999
    json.loads(report.to_json())  # JSON-able

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["exported_by"] == ex.EXPORTED_BY and meta["task"] == "reid"
    assert (meta["input_height"], meta["input_width"]) == (str(H), str(W))
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406] and json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    assert meta["color_order"] == "RGB" and float(meta["pixel_scale"]) == pytest.approx(1 / 255)
    assert json.loads(meta["output_names"]) == ["features", "features_normalized"]
    assert set(json.loads(meta["outputs"])) == {"features", "features_normalized"}
    assert meta["feature_dim"] == str(DIM) and meta["normalized"] == "false"
    assert meta["normalized_output"] == "features_normalized"
    assert meta["model"] == "resnet18" and meta["num_classes"] == str(CLASSES)
    assert meta["source_checkpoint"] == str(ckpt.resolve()) and meta["tool_version"]
    assert json.loads(meta["parity"])["results"][0]["batch_size"] == 1
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["features", "features_normalized"]

    # dynamic batch: sizes never seen at export time, through the runtime wrapper, against PyTorch eager
    model = OnnxFeatureModel(out, intra_op_threads=1)
    assert model.task == "reid" and model.input_size == (H, W) and model.feature_dim == DIM
    assert model.imagenet_static and model.batch_dynamic and model.output_name == "features"
    net = torch_model(ckpt)
    for n in (3, 7):
        images = torch.from_numpy(ex.random_images(n, (H, W), model.mean, model.std, seed=n))
        got = model(images)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == (n, DIM)
        with torch.no_grad():
            ref = net(images).numpy()
        assert np.abs(got.numpy() - ref).max() <= 1e-3  # raw descriptor (not normalised)
        assert np.abs(l2n(got.numpy()) - l2n(ref)).max() <= TOL
        normed = model.run(images.numpy(), "features_normalized")
        assert np.abs(normed - l2n(ref)).max() <= TOL


def test_part_based_reid_export(tmp_path):
    """PCB stripes + global branch, trained with the spectral transform and a feature mask: every re-ID layout."""
    params = parse_params(tiny_train_params("reid", pcb_n_parts=4, feature_global_dim=16, spectral_trans=0.5,
                                            feature_mask=True)).model_dump(mode="json")
    ckpt = save_tiny_checkpoint(tmp_path / "pcb.pth", "reid", params=params)
    [report] = export_checkpoint(ckpt, tmp_path / "pcb.onnx", batch_check=(1, 5))
    assert report.output_dim == DIM + 16 and report.passed
    assert all(r.max_abs_diff <= TOL for r in report.parity)
    model = OnnxFeatureModel(tmp_path / "pcb.onnx", intra_op_threads=1)
    assert model.feature_dim == DIM + 16 and json.loads(model.metadata["model_params"])["pcb_n_parts"] == 4


def test_classification_export_through_the_cli(tmp_path, capsys):
    ckpt = save_tiny_checkpoint(tmp_path / "cls.pth", "classification", params=tiny_train_params("classification"))
    out = tmp_path / "cls.onnx"
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):  # real images for the parity batch (fewer than 5: repeated cyclically)
        Image.fromarray(rng.integers(0, 256, (80 + 10 * i, 40, 3), dtype=np.uint8)).save(images_dir / f"{i}.png")
    assert ex.main(["--checkpoint", str(ckpt), "--out", str(out), "--batch-check", "1,5",
                    "--images", str(images_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "classification" and report["outputs"] == ["logits"] and report["passed"]
    assert report["parity_inputs"].startswith("3 image(s) from")
    assert [r["batch_size"] for r in report["parity"]] == [1, 5]
    assert all(r["max_abs_diff"] <= TOL and r["top1_agreement"] == 1.0 for r in report["parity"])

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["task"] == "classification" and meta["primary_output"] == "logits"
    assert json.loads(meta["class_names"]) == [f"class{i}" for i in range(CLASSES)]

    model = OnnxFeatureModel(out, intra_op_threads=1)
    assert model.task == "classification" and model.feature_dim == CLASSES and model.normalized_output is None
    images = ex.random_images(6, (H, W), model.mean, model.std, seed=1)
    with torch.no_grad():
        ref = torch_model(ckpt)(torch.from_numpy(images)).numpy()
    assert np.abs(model(images).numpy() - ref).max() <= TOL


def test_params_weights_mismatch_is_a_clear_error(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "bad.pth", "reid", params=tiny_train_params("reid"),
                                weights_params=tiny_train_params("reid", feature_dim=16))
    out = tmp_path / "bad.onnx"
    with pytest.raises(CheckpointError,
                       match=r"bad\.pth: weights do not fit this model \(shape mismatch: bn\..*model_params"):
        export_checkpoint(ckpt, out)
    assert not out.exists()


def test_cli_error_is_one_line_without_traceback(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    code = ex.run_cli(["--checkpoint", str(tmp_path / "junk.pth"), "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "junk.pth" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_parity_failure_raises_and_writes_no_file(tmp_path, monkeypatch):
    ckpt = save_tiny_checkpoint(tmp_path / "m.pth", "reid")
    out = tmp_path / "m.onnx"
    monkeypatch.setattr(ex, "FP32_TOLERANCE", -1.0)  # impossible to meet: forces the failure path
    with pytest.raises(ExportError, match=r"parity failed.*batch 1"):
        export_checkpoint(ckpt, out, batch_check=(1,))
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_int8_and_fp16_exports_report_measured_parity(tmp_path, reid_export):
    ckpt, fp32_path, _ = reid_export
    out8 = tmp_path / "int8.onnx"
    [report] = export_checkpoint(ckpt, out8, quantize="int8", batch_check=(1, 4))
    assert report.quantize == "int8" and report.passed and "cosine" in report.threshold
    for r in report.parity:
        assert 0 < r.max_abs_diff < 0.5  # measured and reported, not asserted to the fp32 tolerance
        assert r.mean_cosine >= ex.QUANTIZED_MIN_MEAN_COSINE and r.min_cosine >= ex.QUANTIZED_MIN_COSINE
    assert out8.stat().st_size < 0.5 * fp32_path.stat().st_size
    model = OnnxFeatureModel(out8, intra_op_threads=1)
    assert "int8" in model.metadata["quantization"]
    assert json.loads(model.metadata["parity"])["results"][0]["mean_cosine"] == report.parity[0].mean_cosine
    assert model(ex.random_images(2, (H, W), model.mean, model.std)).shape == (2, DIM)

    out16 = tmp_path / "fp16.onnx"
    [report16] = export_checkpoint(ckpt, out16, quantize="fp16", batch_check=(1, 4))
    assert report16.passed and all(r.mean_cosine >= 0.999 for r in report16.parity)
    onnx.checker.check_model(onnx.load(str(out16)))


# ---------------------------------------------------------------------------------------------------------------------
# runtime


def test_runtime_refuses_non_onnx_and_foreign_onnx(tmp_path):
    junk = tmp_path / "weights.onnx"
    junk.write_bytes(b"\x00\x01 this is not a protobuf at all" * 10)
    with pytest.raises(UserError, match=r"weights\.onnx: not a loadable ONNX model.*deploy\.export"):
        OnnxFeatureModel(junk)
    with pytest.raises(UserError, match="not found"):
        OnnxFeatureModel(tmp_path / "missing.onnx")

    node = onnx.helper.make_node("Identity", ["images"], ["features"])
    graph = onnx.helper.make_graph(
        [node], "foreign", [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 3, H, W])],
        [onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["N", 3, H, W])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8),
              str(foreign))
    ort.InferenceSession(str(foreign), providers=["CPUExecutionProvider"])  # a valid ONNX model ...
    with pytest.raises(UserError, match=r"foreign\.onnx: an ONNX model, but not one exported by this tool.*"
                                        r"exported_by.*found no metadata"):
        OnnxFeatureModel(foreign)  # ... but not ours


def test_runtime_rejects_wrong_input_shape(reid_export):
    model = OnnxFeatureModel(reid_export[1], intra_op_threads=1)
    with pytest.raises(UserError, match=r"N×3×64×32.*\(2, 3, 32, 32\)"):
        model(np.zeros((2, 3, 32, 32), dtype=np.float32))


def test_extract_from_files_equals_torch_on_project_preprocessing(tmp_path, reid_export):
    from data.readers import decode_image
    from data.transforms import build_eval_transform

    ckpt, out, _ = reid_export
    rng = np.random.default_rng(7)
    paths, arrays = [], []
    for i, (h, w) in enumerate([(128, 64), (100, 41), (64, 32), (37, 90), (256, 128)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arrays.append(pixels)
        path = tmp_path / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    model = OnnxFeatureModel(out, intra_op_threads=1)
    got = model.extract(paths, batch_size=2)
    assert got.shape == (len(paths), DIM) and got.dtype == np.float32

    _, params, _ = ex.load_model_from_checkpoint(ckpt)
    transform = build_eval_transform(params.img_h, params.img_w, params.data_augmentation)
    batch = torch.stack([transform(decode_image(p.read_bytes(), str(p))) for p in paths])
    with torch.no_grad():
        ref = torch_model(ckpt)(batch).numpy()
    assert np.abs(l2n(got) - l2n(ref)).max() <= TOL
    assert np.abs(model.extract(paths, normalize=True) - l2n(ref)).max() <= TOL
    # PNG files decode to the arrays exactly, so arrays give the same features
    png = [i for i in range(len(paths)) if paths[i].suffix == ".png"]
    from_arrays = model.extract([arrays[i] for i in png], batch_size=8)
    assert np.abs(from_arrays - got[png]).max() <= 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# shared core (tracker graphs will use it) and the evaluator end to end


def test_export_module_core_for_other_graphs(tmp_path):
    class TwoInputs(torch.nn.Module):
        def forward(self, template, search):
            return (search * template.mean(dim=(2, 3), keepdim=True)).sum(1, keepdim=True)

    out = tmp_path / "pair.onnx"
    template, search = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 16, 16)
    proto = export_module(TwoInputs().eval(), (template, search), ["template", "search"], ["response"], None,
                          {"task": "tracker_pair", "meaning": {"response": "score map"}}, out)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["task"] == "tracker_pair" and json.loads(meta["meaning"]) == {"response": "score map"}
    assert meta["exported_by"] == ex.EXPORTED_BY
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"template": template.numpy(), "search": search.numpy()})
    assert np.abs(got - TwoInputs()(template, search).numpy()).max() <= 1e-5


def test_evaluator_on_onnx_equals_checkpoint(tiny_market, tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "model_best.pth", "reid", num_classes=8,
                                params=tiny_train_params("reid", str(tiny_market)))
    onnx_path = tmp_path / "model.onnx"
    export_checkpoint(ckpt, onnx_path, batch_check=(1, 4))
    params_files = {}
    for name, model_path in (("pth", ckpt), ("onnx", onnx_path)):
        params_files[name] = tmp_path / f"eval_{name}.json"
        params_files[name].write_text(json.dumps({"model_path": str(model_path), "data_dir": str(tiny_market),
                                                  "batch_size": 16, "num_preprocess_workers": 0,
                                                  "result_log_file": str(tmp_path / f"result_{name}.json")}))
    # the .onnx evaluation as a user runs it (a fresh `python evaluator.py`); the .pth one meanwhile in this process
    # (same code path, minus a second ~10 s torch import on a busy machine)
    proc = subprocess.Popen([sys.executable, str(ROOT / "evaluator.py"), str(params_files["onnx"])], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    import evaluator

    assert evaluator.main([str(params_files["pth"])]) == 0
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    metrics = {name: json.loads((tmp_path / f"result_{name}.json").read_text())["metrics"] for name in params_files}
    assert set(metrics["pth"]) == set(metrics["onnx"])
    for key in ("rank1", "mAP"):
        assert key in metrics["pth"]
    for key, value in metrics["pth"].items():
        assert metrics["onnx"][key] == pytest.approx(value, abs=1e-6), key
