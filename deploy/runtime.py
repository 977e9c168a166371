"""Run a model exported by ``python -m deploy.export`` in ONNX Runtime.

    from deploy.runtime import OnnxFeatureModel
    model = OnnxFeatureModel("model.onnx")
    feats = model.extract(["a.jpg", "b.jpg"], normalize=True)   # N×D float32, preprocessing from the metadata

Two ways in:

* ``model(images)``: a float32 N×3×H×W batch that is already preprocessed (as the project's eval transform makes it),
  torch tensor or NumPy array → torch float32 tensor of raw features (re-ID) or logits (classification). This is what
  ``evaluator.py`` / ``evaluate.features`` call.
* ``model.extract(paths_or_arrays)``: image files, PIL images or uint8 H×W×3 RGB arrays; decoding, RGB conversion,
  bilinear resize, ×1/255 and mean/std come from the model's metadata, so nothing else of the project (and no
  PyTorch) is needed.

Only models carrying this tool's metadata are accepted; anything else is a :class:`UserError` naming the file.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from data.imaging import IMAGENET_MEAN, IMAGENET_STD
from engine.errors import UserError

log = logging.getLogger(__name__)

TOOL_NAME = "reid-service"
EXPORTED_BY = f"{TOOL_NAME} deploy.export"  # the metadata marker of our exports (this module is torch-free)
SUPPORTED_FORMAT_VERSIONS = ("1",)
REQUIRED_KEYS = ("task", "input_name", "input_height", "input_width", "mean", "std", "color_order", "pixel_scale",
                 "output_names", "primary_output", "feature_dim")


class OnnxModelError(UserError):
    """A file that is not a usable ONNX model of this tool; the message names it and says what was expected."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


class OnnxFeatureModel:
    """An ONNX model exported by this tool, loaded in ONNX Runtime (CPU, or CUDA first when `prefer_cuda` and the
    CUDA provider is installed). `intra_op_threads`: ONNX Runtime's CPU thread count; None = $OMP_NUM_THREADS when
    set, else ONNX Runtime's default (one per physical core).

    Attributes: ``path``, ``task`` ("reid" / "classification"), ``input_size`` (h, w), ``mean``, ``std``,
    ``imagenet_static`` (mean/std are ImageNet's), ``feature_dim`` (width of the primary output), ``output_name``
    (``features`` or ``logits``), ``class_names``, ``metadata`` (every metadata entry, as strings), ``providers``.
    """

    def __init__(self, path: str | os.PathLike, prefer_cuda: bool = False,
                 intra_op_threads: Optional[int] = None) -> None:
        self.path = Path(path)
        self.session, self.metadata = open_exported(self.path, prefer_cuda, intra_op_threads)
        self.providers = self.session.get_providers()
        self._read_metadata()
        self._check_graph()

    # ---------------------------------------------------------------------------------------------------------------
    # loading and validation

    def _bad(self, what: str) -> OnnxModelError:
        return OnnxModelError(f"{self.path}: {what}")

    def _json(self, key: str) -> Any:
        try:
            return json.loads(self.metadata[key])
        except (json.JSONDecodeError, TypeError):
            raise self._bad(f"metadata entry {key!r} is not valid JSON (found {self.metadata[key]!r})") from None

    def _int(self, key: str) -> int:
        try:
            value = int(self.metadata[key])
        except ValueError:
            raise self._bad(f"metadata entry {key!r}: expected an integer, found {self.metadata[key]!r}") from None
        if value < 1:
            raise self._bad(f"metadata entry {key!r}: expected ≥ 1, found {value}")
        return value

    def _read_metadata(self) -> None:
        meta = self.metadata
        missing = [key for key in REQUIRED_KEYS if key not in meta]
        if missing:
            raise self._bad(f"metadata lacks {', '.join(missing)} (a damaged or hand-edited export?)")
        self.task = meta["task"]
        if self.task not in ("reid", "classification"):
            raise self._bad(f"metadata task {self.task!r}; expected 'reid' or 'classification'")
        self.input_name = meta["input_name"]
        self.input_size = (self._int("input_height"), self._int("input_width"))
        mean, std = self._json("mean"), self._json("std")
        for key, value in (("mean", mean), ("std", std)):
            if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
                raise self._bad(f"metadata {key}: expected 3 numbers, found {meta[key]!r}")
        if any(s <= 0 for s in std):
            raise self._bad(f"metadata std: expected positive values, found {std}")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.imagenet_static = (np.allclose(self.mean, IMAGENET_MEAN, rtol=0, atol=1e-6)
                                and np.allclose(self.std, IMAGENET_STD, rtol=0, atol=1e-6))
        if meta["color_order"].upper() != "RGB":
            raise self._bad(f"metadata color_order {meta['color_order']!r}; this runtime handles RGB")
        try:
            self.pixel_scale = float(meta["pixel_scale"])
        except ValueError:
            raise self._bad(f"metadata pixel_scale: expected a number, found {meta['pixel_scale']!r}") from None
        self.output_names = list(self._json("output_names"))
        self.output_name = meta["primary_output"]
        self.normalized_output = meta.get("normalized_output") or None
        self.feature_dim = self._int("feature_dim")
        self.class_names = list(self._json("class_names")) if "class_names" in meta else []
        self.num_classes = int(meta["num_classes"]) if meta.get("num_classes", "").isdigit() else None

    def _check_graph(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != self.input_name:
            raise self._bad(f"graph inputs {[i.name for i in inputs]}; the metadata promises one input "
                            f"{self.input_name!r}")
        shape = inputs[0].shape
        expected = [3, *self.input_size]
        if len(shape) != 4 or list(shape[1:]) != expected:
            raise self._bad(f"graph input shape {shape}; the metadata promises N×{expected[0]}×{expected[1]}×"
                            f"{expected[2]}")
        available = [o.name for o in self.session.get_outputs()]
        for name in [self.output_name] + ([self.normalized_output] if self.normalized_output else []):
            if name not in available:
                raise self._bad(f"graph outputs {available} lack {name!r}, which the metadata names")
        self.batch_dynamic = not isinstance(shape[0], int)
        self.fixed_batch = None if self.batch_dynamic else int(shape[0])

    def __repr__(self) -> str:
        return (f"OnnxFeatureModel({str(self.path)!r}, task={self.task!r}, input={self.input_size[0]}×"
                f"{self.input_size[1]}, {self.output_name}={self.feature_dim}, providers={self.providers})")

    # ---------------------------------------------------------------------------------------------------------------
    # inference

    def run(self, images: Any, output: Optional[str] = None) -> np.ndarray:
        """N×3×H×W preprocessed float32 batch (NumPy or torch) → the `output` (default: the primary one) as NumPy."""
        batch = self._as_batch(images)
        name = output or self.output_name
        if name not in self.output_names:
            raise UserError(f"{self.path}: no output {name!r}; outputs: {', '.join(self.output_names)}")
        if batch.shape[0] == 0:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        if self.fixed_batch is not None and batch.shape[0] != self.fixed_batch:
            return np.concatenate([self.run(batch[i:i + self.fixed_batch], name)
                                   for i in range(0, batch.shape[0], self.fixed_batch)])
        try:
            (result,) = self.session.run([name], {self.input_name: batch})
        except Exception as err:  # noqa: BLE001 - onnxruntime's own exception types
            raise UserError(f"{self.path}: ONNX Runtime failed on a batch of shape {tuple(batch.shape)}: "
                            f"{_first_line(err)}") from None
        return np.asarray(result, dtype=np.float32)

    def __call__(self, images: Any):
        """Preprocessed N×3×H×W batch → torch float32 tensor of raw features (re-ID) or logits (classification)."""
        import torch

        return torch.from_numpy(self.run(images))

    def _as_batch(self, images: Any) -> np.ndarray:
        if hasattr(images, "detach") and hasattr(images, "cpu"):  # a torch tensor, without importing torch
            images = images.detach().cpu()
            if str(images.dtype) != "torch.float32":
                images = images.float()
            images = images.numpy()
        array = np.asarray(images)
        h, w = self.input_size
        if array.ndim != 4 or array.shape[1:] != (3, h, w):
            raise UserError(f"{self.path}: expected a batch of shape N×3×{h}×{w} (preprocessed, float32), found "
                            f"{tuple(array.shape)}; use extract() for raw images")
        if not np.issubdtype(array.dtype, np.floating):
            raise UserError(f"{self.path}: expected a float32 batch (already normalised), found dtype {array.dtype}; "
                            "use extract() for raw 8-bit images")
        return np.ascontiguousarray(array, dtype=np.float32)

    # ---------------------------------------------------------------------------------------------------------------
    # preprocessing from the metadata

    def preprocess(self, item: Any) -> np.ndarray:
        """One image (path, PIL image, or uint8 H×W×3 RGB / H×W grey array) → 3×H×W float32 as the model expects:
        RGB, bilinear resize (PIL, antialiased) to the input size, ×pixel_scale, (x − mean)/std."""
        from PIL import Image

        image = self._load(item)
        h, w = self.input_size
        if image.size != (w, h):
            image = image.resize((w, h), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) * np.float32(self.pixel_scale)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((pixels - mean) / std).transpose(2, 0, 1).astype(np.float32)

    def _load(self, item: Any):
        from PIL import Image

        if isinstance(item, Image.Image):
            return item.convert("RGB")
        if isinstance(item, (str, os.PathLike)):
            try:
                with Image.open(item) as img:
                    img.load()
                    return img.convert("RGB")
            except FileNotFoundError:
                raise UserError(f"{item}: image file not found") from None
            except Exception as err:  # noqa: BLE001 - PIL raises many types for unreadable files
                raise UserError(f"{item}: cannot decode image ({_first_line(err)})") from None
        array = np.asarray(item)
        if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
            raise UserError(f"extract: expected image paths, PIL images or uint8 arrays H×W×3 (RGB) / H×W; found an "
                            f"array of shape {array.shape} and dtype {array.dtype}")
        return Image.fromarray(array).convert("RGB")

    def extract(self, paths_or_arrays: Iterable[Any] | Any, batch_size: int = 32, normalize: bool = False,
                output: Optional[str] = None) -> np.ndarray:
        """Features (re-ID) or logits (classification) of raw images, float32 N×D, in input order.

        `normalize=True` returns L2-normalised features (the graph's ``features_normalized`` output, re-ID only).
        """
        if batch_size < 1:
            raise UserError(f"extract: batch_size must be ≥ 1; found {batch_size}")
        if normalize:
            if not self.normalized_output:
                raise UserError(f"{self.path}: normalize=True needs a re-ID model; this one outputs {self.output_name}")
            output = self.normalized_output
        items = _as_items(paths_or_arrays)
        chunks = []
        for start in range(0, len(items), batch_size):
            batch = np.stack([self.preprocess(item) for item in items[start:start + batch_size]])
            chunks.append(self.run(batch, output))
        if not chunks:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(chunks)


def open_exported(path: Path, prefer_cuda: bool = False, intra_op_threads: Optional[int] = None):
    """(ONNX Runtime session, metadata dict) of a model exported by this tool (any task's graph): a file that is not
    there, not loadable, not ours or of an unknown deploy format is an OnnxModelError naming it. CPU, or CUDA first
    when `prefer_cuda` and the CUDA provider is installed; `intra_op_threads`: None = $OMP_NUM_THREADS when set, else
    ONNX Runtime's default (one per physical core)."""
    import onnxruntime as ort

    if not path.is_file():
        raise OnnxModelError(f"{path}: ONNX model file not found")
    providers = ["CPUExecutionProvider"]
    if prefer_cuda:
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            log.warning("%s: CUDA requested but onnxruntime has no CUDAExecutionProvider here (installed: %s); "
                        "running on CPU", path, ", ".join(ort.get_available_providers()))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    threads = intra_op_threads if intra_op_threads is not None else _threads_from_env()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime's pybind exceptions (InvalidProtobuf, Fail, ...)
        raise OnnxModelError(f"{path}: not a loadable ONNX model (ONNX Runtime: {_first_line(err)}); "
                             "expected a .onnx file written by `python -m deploy.export`") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    marker = meta.get("exported_by")
    if marker != EXPORTED_BY:
        found = f"exported_by={marker!r}" if marker else (
            f"metadata keys {sorted(meta)[:8]}" if meta else "no metadata at all")
        raise OnnxModelError(f"{path}: an ONNX model, but not one exported by this tool (expected metadata "
                             f"exported_by={EXPORTED_BY!r} with the input size, normalisation and output meaning; "
                             f"found {found}); export it with `python -m deploy.export --checkpoint "
                             "RUN/model_best.pth --out model.onnx`")
    version = meta.get("deploy_format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise OnnxModelError(f"{path}: deploy format version {version!r}; this version reads "
                             f"{', '.join(SUPPORTED_FORMAT_VERSIONS)}")
    return session, meta


def export_graph_paths(path: str | os.PathLike, graphs: Sequence[Sequence[str]], what: str) -> dict[str, Path]:
    """The files of an export of several graphs (``python -m deploy.export`` writes ``OUT.<graph>.onnx`` for each):
    ``OUT.onnx`` or any ``OUT.<graph>.onnx`` names them all. Each entry of `graphs` is one graph's name, or names that
    can stand in for each other (the first existing file is taken); the result maps each entry's first name to its
    file. A missing file is an OnnxModelError naming what the export should hold (`what`, e.g. "a SiamFC++ export")."""
    path = Path(path)
    stem = path.name.removesuffix(".onnx")
    for names in graphs:
        for name in names:
            stem = stem.removesuffix(f".{name}")
    paths, missing = {}, []
    for names in graphs:
        candidates = [path.with_name(f"{stem}.{name}.onnx") for name in names]
        found = [candidate for candidate in candidates if candidate.is_file()]
        if found:
            paths[names[0]] = found[0]
        else:
            missing.append(" or ".join(str(candidate) for candidate in candidates))
    if missing:
        expected = ", ".join("/".join(f"{stem}.{name}.onnx" for name in names) for names in graphs)
        raise OnnxModelError(f"{path}: {what} is {len(graphs)} files, {expected}; missing: {'; '.join(missing)}")
    return paths


def exported_task(path: str | os.PathLike) -> str:
    """The task of an export of this tool: `path` itself, or for a task of several graphs the ``OUT`` name given to
    ``deploy.export --out`` (its files are ``OUT_STEM.<graph>.onnx``)."""
    path = Path(path)
    candidates = [path] if path.exists() else sorted(path.parent.glob(f"{glob.escape(path.stem)}.*.onnx"))
    if not candidates:
        raise OnnxModelError(f"{path}: ONNX model file not found (nor {path.stem}.<graph>.onnx files of a "
                             "multi-graph export)")
    _, meta = open_exported(candidates[0])
    if "task" not in meta:
        raise OnnxModelError(f"{candidates[0]}: metadata names no task (a damaged or hand-edited export?)")
    return meta["task"]


def _threads_from_env() -> int:
    """OMP_NUM_THREADS, which PyTorch honours and ONNX Runtime does not, applied to ONNX Runtime's intra-op pool too,
    so one setting limits both; 0 (ONNX Runtime's default: one thread per physical core) when unset or invalid."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 0


def _as_items(paths_or_arrays: Any) -> Sequence[Any]:
    """A single image (path or array) or a sequence of them, as a list."""
    if isinstance(paths_or_arrays, (str, os.PathLike)):
        return [paths_or_arrays]
    if isinstance(paths_or_arrays, np.ndarray):
        if paths_or_arrays.dtype == np.uint8 and paths_or_arrays.ndim == 4:
            return list(paths_or_arrays)  # N×H×W×3
        return [paths_or_arrays]
    try:
        from PIL import Image

        if isinstance(paths_or_arrays, Image.Image):
            return [paths_or_arrays]
    except ImportError:  # pragma: no cover
        pass
    return list(paths_or_arrays)
