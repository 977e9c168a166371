"""The ONNX graph of a re-ID or classification model (``export_graphs`` of those tasks, called by ``deploy.export``):
one graph, input ``images`` (N×3×H×W float32, normalised), outputs ``features`` and ``features_normalized`` (re-ID)
or ``logits`` (classification), with the preprocessing and the outputs' meaning in the metadata."""

from __future__ import annotations

from typing import Optional

from deploy import export as export_core
from deploy.export import PARITY_SEED, ExportGraph, images_from_dir, random_images
from networks.reid_params import ReidParams


def _with_normalized_features(net):
    """(features, features_normalized): the eval descriptor and its L2-normalised copy, inside the graph."""
    import torch
    from torch import nn

    class ReidExport(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.net = inner

        def forward(self, images: torch.Tensor):
            features = self.net(images)
            return features, nn.functional.normalize(features, p=2.0, dim=1, eps=1e-12)

    return ReidExport(net).eval()


def export_graphs(model, params: ReidParams, checkpoint: dict, batch: int,
                  images_dir: Optional[str] = None) -> list[ExportGraph]:
    """The one graph of `model` (in eval mode), with `batch` parity images: real ones from `images_dir` through the
    evaluation transform, else deterministic random images normalised like real data."""
    import torch

    from data.transforms import build_eval_transform, network_input_size, normalization

    aug = params.data_augmentation
    h, w = network_input_size(params.img_h, params.img_w, aug)
    mean, std = normalization(aug)
    if images_dir is not None:
        images, distinct = images_from_dir(images_dir, batch, build_eval_transform(params.img_h, params.img_w, aug))
        described = f"{distinct} image(s) from {images_dir} through the eval transform"
    else:
        images = random_images(batch, (h, w), mean, std)
        described = f"deterministic random images (seed {PARITY_SEED}), normalised like real data"
    num_classes = int(checkpoint["task_state"]["num_classes"])
    if params.task == "reid":
        module, outputs = _with_normalized_features(model), ["features", "features_normalized"]
        dim = int(model.descriptor_dim)
        meaning = {"features": f"N×{dim} raw re-ID descriptor (BNNeck output of the PyTorch model in eval mode), "
                               "not L2-normalised",
                   "features_normalized": f"N×{dim} the same descriptor L2-normalised (x / max(‖x‖₂, 1e-12)); "
                                          "compare with cosine similarity = dot product"}
        compared, primary, tolerance = "features_normalized", "features", export_core.FP32_TOLERANCE
    else:
        module, outputs, dim = model, ["logits"], num_classes
        meaning = {"logits": f"N×{dim} class scores before softmax, in the order of class_names"}
        with torch.no_grad():  # logits are compared relative to their size
            scale = float(model(torch.from_numpy(images)).abs().max())
        compared, primary, tolerance = "logits", "logits", export_core.FP32_TOLERANCE * max(1.0, scale)
    metadata = {
        "task": params.task,
        "model": params.model_params.model,
        "model_params": params.model_params.model_dump(mode="json"),
        "num_classes": str(num_classes),
        "class_names": list(checkpoint["task_state"].get("class_names") or []),
        "input_name": "images",
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "input_height": str(h),
        "input_width": str(w),
        "mean": list(mean),
        "std": list(std),
        "normalization": "imagenet" if aug.imagenet_static else "0.5",
        "color_order": "RGB",
        "pixel_scale": repr(1.0 / 255.0),
        "resize": "bilinear",
        "preprocessing": f"decode to RGB → bilinear resize (PIL, antialiased) to {h}×{w} → float32 ×1/255 → "
                         "(x − mean) / std per channel → N×3×H×W",
        "output_names": outputs,
        "outputs": meaning,
        "primary_output": primary,
        "feature_dim": str(dim),
        "normalized": "false",
        "normalized_output": "features_normalized" if params.task == "reid" else "",
        "batch_axis": "dynamic",
    }
    report = {"model": params.model_params.model, "input_size": [h, w], "output_dim": dim, "num_classes": num_classes}
    return [ExportGraph(module=module, inputs={"images": images}, output_names=outputs, compared_output=compared,
                        primary_output=primary, tolerance=tolerance, metadata=metadata, report=report,
                        inputs_description=described, top1_agreement=params.task == "classification")]


def load_exported(model_path: str, eval_params, evaluation_overrides: dict, device):
    """Offline evaluation of an exported re-ID / classification graph (evaluator.py): (the ONNX Runtime model, the
    params rebuilt from its metadata and eval_params.json, its class names)."""
    from deploy.runtime import OnnxFeatureModel
    from engine.errors import UserError
    from engine.params import parse_params

    ep = eval_params
    if not ep.data_dir:
        raise UserError(f"data_dir: required when model_path is an ONNX model ({model_path} carries no training "
                        "params, so it does not know the evaluation data); set \"data_dir\" to the evaluation root, "
                        "e.g. the Market-1501 root with query/ and bounding_box_test/")
    model = OnnxFeatureModel(model_path, prefer_cuda=device.type == "cuda")
    h, w = model.input_size
    if ep.img_h and (ep.img_h, ep.img_w or w) != (h, w):
        raise UserError(f"img_h/img_w: {ep.img_h}×{ep.img_w} differ from the ONNX model's input {h}×{w}")
    params = parse_params({
        "task": model.task, "batches_dir": ep.data_dir, "img_h": h, "img_w": w,
        "data_augmentation": {"imagenet_static": model.imagenet_static},
        "num_preprocess_workers": ep.num_preprocess_workers,
        "evaluation_params": {"batch_size": 64, **evaluation_overrides, "data_dir": ep.data_dir},
    }, f"{model_path} (ONNX metadata)")
    return model, params, model.class_names
