"""Export a trained model to ONNX, with its preprocessing in the metadata and parity proven at export time.

    python -m deploy.export --checkpoint RUN/model_best.pth --out model.onnx [--opset 17]
                            [--quantize none|fp16|int8] [--batch-check 1,4] [--images DIR]

The model is rebuilt by its task from the params stored in the checkpoint (never from a state dict alone), and the
task names the graphs to export (``export_graphs`` of the task module: :class:`ExportGraph`, each with its module,
named inputs, outputs, parity tolerance and metadata). A task's only graph is written to ``--out``; a task with several
(a tracker's template and search graphs) writes ``OUT_STEM.<name>.onnx`` for each. This module knows no task:

* re-ID (``networks/reid_export.py``): input ``images`` (N×3×H×W float32, normalised), outputs ``features`` (the raw
  N×D descriptor, as the PyTorch model returns it) and ``features_normalized`` (the same, L2-normalised inside the
  graph); classification: input ``images``, output ``logits`` (N×num_classes).

The batch axis is dynamic, unless a graph asks for a fixed batch (``ExportGraph.static_batch``: the trackers' search
graphs, whose depth-wise cross-correlation is a grouped convolution with the batch in its group count). Everything a consumer needs (input size, mean/std, colour order, pixel scale, output
meaning, feature dim, …) is written into the model's ``metadata_props``; :mod:`deploy.runtime` reads it back.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. On this stack it exports the ResNet
re-ID/classification graphs at the requested opset (17) with a dynamic batch axis and Conv+BN folded, in about half the
time of the torch.export-based exporter, which cannot produce opset < 18 (its down-conversion fails and leaves opset 18
behind with a traceback in the log). ``exporter="dynamo"`` is kept as an option (opset raised to ≥ 18).

Parity: before anything is written to ``out``, ONNX Runtime (CPUExecutionProvider) is run against PyTorch eager on
the same batch at each size in ``batch_check`` (default 1 and 4). fp32 exports must agree within the graph's
tolerance on its compared output (re-ID: ``FP32_TOLERANCE`` on the L2-normalised features; classification: on the
logits, scaled by max(1, max|logit|)). Quantised exports (int8 dynamic, fp16) are measured the same way and must
keep the mean cosine similarity to the fp32 PyTorch output ≥ ``QUANTIZED_MIN_MEAN_COSINE`` (and the worst image
≥ ``QUANTIZED_MIN_COSINE``). A failed check raises :class:`ExportError` and leaves no output file behind (the file
is written atomically, only after every check passed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from data.imaging import IMAGE_EXTENSIONS
from deploy.runtime import EXPORTED_BY, TOOL_NAME
from engine.errors import UserError, run_command
from engine.run_dir import write_atomic

log = logging.getLogger(__name__)

DEPLOY_FORMAT_VERSION = "1"
DEFAULT_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")
QUANTIZE_CHOICES = ("none", "fp16", "int8")

FP32_TOLERANCE = 1e-4  # max abs diff: normalised features (re-ID) / logits ÷ max(1, max|logit|) (classification)
QUANTIZED_MIN_MEAN_COSINE = 0.99
QUANTIZED_MIN_COSINE = 0.95
PARITY_SEED = 0


class ExportError(UserError):
    """An export that cannot be produced or does not behave like the PyTorch model; the message says which check."""


# ---------------------------------------------------------------------------------------------------------------------
# report


@dataclass
class ParityResult:
    """ONNX Runtime vs PyTorch eager (fp32) on one batch."""

    batch_size: int
    compared: str              # the output compared: "features_normalized" or "logits"
    max_abs_diff: float        # on `compared` (for re-ID: L2-normalised features)
    max_abs_diff_raw: float    # on the raw output ("features" / "logits")
    mean_cosine: float         # cosine similarity of each image's output vector, averaged
    min_cosine: float
    top1_agreement: Optional[float] = None  # classification: fraction of images with the same arg-max


@dataclass
class ExportGraph:
    """One ONNX graph a task exports (``export_graphs`` of the task module): what to trace, the inputs of the parity
    check, and how close ONNX Runtime must come to PyTorch. The core (tracing, metadata, checker, parity, quantised
    variants, the atomic write) knows no task."""

    module: Any                      # an nn.Module in eval mode; module(*inputs) returns the outputs in order
    inputs: dict[str, np.ndarray]    # name → float32 batch of at least max(batch_check) rows; axis 0 is dynamic
    output_names: list[str]
    compared_output: str             # fp32 exports: max |Δ| on this output must stay within `tolerance`
    primary_output: str              # quantised exports: cosine similarity of this output's rows is measured
    tolerance: float
    metadata: dict[str, Any]         # written into metadata_props (the task's preprocessing, output meaning, …)
    report: dict[str, Any]           # the task's fields of the ExportReport (model, input_size, output_dim, …)
    inputs_description: str = ""     # what the parity inputs are, for the report
    top1_agreement: bool = False     # also report the share of rows with the same arg-max of the primary output
    name: str = ""                   # "" for a task's only graph (written to --out), else OUT_STEM.<name>.onnx
    # A fixed batch size instead of a dynamic batch axis (graphs whose batch is a number in them, e.g. a depth-wise
    # cross-correlation written as a grouped convolution): traced and checked at exactly this many rows.
    static_batch: Optional[int] = None


@dataclass
class ExportReport:
    out_path: str
    source_checkpoint: str
    task: str
    model: str
    input_size: list[int]
    outputs: list[str]
    output_dim: int
    num_classes: Optional[int]
    opset: int
    exporter: str
    quantize: str
    parity_inputs: str
    threshold: str
    parity: list[ParityResult] = field(default_factory=list)
    passed: bool = False
    file_bytes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


# ---------------------------------------------------------------------------------------------------------------------
# the shared core


def tool_version() -> str:
    """Version of this tool: the installed distribution's, else pyproject.toml's, else "unknown"."""
    try:
        from importlib.metadata import version

        return version(TOOL_NAME)
    except Exception:  # noqa: BLE001 - PackageNotFoundError or a broken installation alike
        pass
    try:
        import tomllib

        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except Exception:  # noqa: BLE001
        return "unknown"


def _metadata_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def _torch_export(module, example_inputs: tuple, path: Path, input_names: Sequence[str],
                  output_names: Sequence[str], dynamic_axes: Optional[dict], opset: int, exporter: str) -> None:
    import torch

    kwargs = dict(input_names=list(input_names), output_names=list(output_names), dynamic_axes=dynamic_axes or None,
                  opset_version=opset)
    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation on every call; the dynamo one suggests
        # dynamic_shapes. Neither says anything about this export.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*dynamic_axes.*")
        # the exporters print progress to stdout, which belongs to the CLI's JSON report
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
            if exporter == "torchscript":
                torch.onnx.export(module, example_inputs, str(path), dynamo=False, do_constant_folding=True,
                                  **kwargs)
            else:
                torch.onnx.export(module, example_inputs, str(path), dynamo=True, external_data=False,
                                  verbose=False, **kwargs)


def export_module(module, example_inputs: tuple, input_names: Sequence[str], output_names: Sequence[str],
                  dynamic_axes: Optional[dict], metadata: dict[str, Any], out_path: str | Path, *,
                  opset: int = DEFAULT_OPSET, exporter: str = "torchscript",
                  postprocess: Optional[Callable[[Any], Any]] = None,
                  verify: Optional[Callable[[Any], Optional[dict[str, Any]]]] = None):
    """Export `module` (an ``nn.Module`` in eval mode) to ONNX at `out_path`; returns the saved ``onnx.ModelProto``.

    The shared core of every export of this tool (re-ID, classification, and later each tracker graph):

    1. ``torch.onnx.export`` of ``module(*example_inputs)`` with the given input/output names and ``dynamic_axes``
       (``{name: {axis: "label"}}``; None = all static);
    2. ``postprocess(model) -> model``, optional (e.g. quantisation);
    3. `metadata` (values: str, or anything JSON-able, stored as JSON) added to ``metadata_props`` together with
       ``exported_by``, ``deploy_format_version``, ``tool_version``, ``torch_version``, ``exporter`` and ``opset``;
    4. ``onnx.checker.check_model(full_check=True)``;
    5. ``verify(model)``, optional: raises (an ExportError) to refuse the model, or returns extra metadata (e.g. the
       measured parity) to record;
    6. atomic write to `out_path`. Nothing is written there unless every step passed.
    """
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise ExportError(f"exporter: expected one of {', '.join(EXPORTERS)}; found {exporter!r}")
    if module.training:
        raise ExportError(f"{type(module).__name__}: the module must be in eval mode to export its inference graph")
    if exporter == "dynamo" and opset < 18:
        log.info("the dynamo exporter produces opset ≥ 18; exporting opset 18 instead of %d", opset)
        opset = 18
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            _torch_export(module, example_inputs, raw, input_names, output_names, dynamic_axes, opset, exporter)
        except Exception as err:  # noqa: BLE001 - exporter failures come in every exception type
            raise ExportError(f"torch.onnx.export ({exporter}, opset {opset}) failed for "
                              f"{type(module).__name__}: {_first_line(err)}") from err
        model = onnx.load(str(raw))
    if postprocess is not None:
        model = postprocess(model)
    props = {key: _metadata_text(value) for key, value in metadata.items()}
    props.update({"exported_by": EXPORTED_BY, "deploy_format_version": DEPLOY_FORMAT_VERSION,  # not overridable
                  "tool_version": tool_version(), "torch_version": torch.__version__, "exporter": exporter,
                  "opset": str(opset)})
    _set_metadata(model, props)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # noqa: BLE001 - onnx.checker.ValidationError, shape-inference errors
        raise ExportError(f"onnx.checker rejected the exported {type(module).__name__}: {_first_line(err)}") from err
    if verify is not None:
        extra = verify(model)
        if extra:
            _set_metadata(model, {key: _metadata_text(value) for key, value in extra.items()})
    _save_atomic(model, out_path)
    return model


def _set_metadata(model, props: dict[str, str]) -> None:
    """Set (add or replace) entries of ``model.metadata_props``."""
    existing = {entry.key: entry for entry in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value


def _save_atomic(model, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(out_path, lambda handle: handle.write(model.SerializeToString()))
    except OSError as err:
        raise ExportError(f"{out_path}: cannot write the ONNX file ({err.strerror or err})") from None
    except ValueError as err:  # protobuf refuses messages > 2 GiB
        raise ExportError(f"{out_path}: the model is too large for a single ONNX file ({err})") from None


def session_from_model(model, providers: Sequence[str] = ("CPUExecutionProvider",), intra_op_threads: int = 1):
    """An ONNX Runtime session on an in-memory ModelProto. The parity check runs single-threaded by default: its
    speed does not matter, and a thread pool that spins on a machine busy with other jobs can be 10–50× slower."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=list(providers))
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own pybind exception types
        raise ExportError(f"ONNX Runtime cannot load the exported model: {_first_line(err)}") from err


# ---------------------------------------------------------------------------------------------------------------------
# quantisation


def _quantize_int8(model):
    """Dynamic int8 quantisation by ONNX Runtime: QInt8 weights for MatMul/Gemm/Conv, activations quantised at run
    time (uint8). Shape inference/optimisation pre-processing first where it succeeds."""
    import onnx

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise ExportError(f"--quantize int8 is not available: onnxruntime.quantization cannot be imported ({err})") \
            from None
    with tempfile.TemporaryDirectory(prefix="onnx-quant-") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        model = onnx.ModelProto.FromString(model.SerializeToString())
        del model.graph.value_info[:]  # stale intermediate shapes (dynamo exporter) clash with re-inference
        onnx.save(model, str(src))
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception as err:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
            log.info("quantisation pre-processing skipped (%s)", _first_line(err))
            source = src
        try:
            quantize_dynamic(str(source), str(dst), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm", "Conv"])
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"int8 dynamic quantisation failed: {_first_line(err)}") from err
        return onnx.load(str(dst))


def _quantize_fp16(model):
    """fp16 weights and compute with float32 inputs/outputs (onnxruntime.transformers.float16)."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except Exception as err:  # noqa: BLE001 - ImportError or a missing optional dependency inside it
        raise ExportError("--quantize fp16 is not available: it needs onnxruntime.transformers.float16, which cannot "
                          f"be imported from the installed onnxruntime ({_first_line(err)}); use --quantize int8 or "
                          "none") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            converted = convert_float_to_float16(model, keep_io_types=True)
            # the converter appends the input/output Cast nodes at the end of the node list: restore the
            # topological order that the ONNX standard (and onnx.checker) requires
            from onnxruntime.transformers.onnx_model import OnnxModel

            wrapper = OnnxModel(converted)
            wrapper.topological_sort()
            return wrapper.model
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"fp16 conversion failed: {_first_line(err)}") from err


QUANTIZERS: dict[str, Optional[Callable]] = {"none": None, "int8": _quantize_int8, "fp16": _quantize_fp16}
QUANTIZATION_TEXT = {"none": "none (fp32)",
                     "int8": "int8 dynamic (onnxruntime quantize_dynamic: QInt8 weights of MatMul/Gemm/Conv, "
                             "activations quantised at run time)",
                     "fp16": "fp16 weights and compute, float32 inputs/outputs (onnxruntime.transformers.float16)"}


# ---------------------------------------------------------------------------------------------------------------------
# parity


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    return (a * b).sum(1) / (na * nb)


def _l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def measure_parity(session, graph: ExportGraph, batch_sizes: Sequence[int]) -> list[ParityResult]:
    """Run ONNX Runtime and PyTorch eager (fp32, no grad) on the first `bs` rows of the graph's inputs for each batch
    size, and compare the outputs."""
    import torch

    results = []
    for bs in batch_sizes:
        feed = {name: np.ascontiguousarray(array[:bs]) for name, array in graph.inputs.items()}
        try:
            got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"ONNX Runtime failed on a batch of {bs}: {_first_line(err)}") from err
        with torch.no_grad():
            ref = graph.module(*(torch.from_numpy(a) for a in feed.values()))
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        expected = {name: t.float().numpy() for name, t in zip(graph.output_names, ref)}
        for name in graph.output_names:
            if got[name].shape != expected[name].shape:
                raise ExportError(f"ONNX output {name} has shape {got[name].shape}, PyTorch's {expected[name].shape} "
                                  f"at batch {bs}")
        primary, primary_ref = got[graph.primary_output], expected[graph.primary_output]
        cos = _cosines(primary.reshape(bs, -1), primary_ref.reshape(bs, -1))
        agreement = (float(np.mean(primary.argmax(1) == primary_ref.argmax(1))) if graph.top1_agreement else None)
        diff = float(np.abs(got[graph.compared_output].astype(np.float64) - expected[graph.compared_output]).max())
        results.append(ParityResult(batch_size=bs, compared=graph.compared_output, max_abs_diff=diff,
                                    max_abs_diff_raw=float(np.abs(primary.astype(np.float64) - primary_ref).max()),
                                    mean_cosine=float(cos.mean()), min_cosine=float(cos.min()),
                                    top1_agreement=agreement))
    return results


def threshold_text(graph: ExportGraph, quantize: str) -> str:
    if quantize == "none":
        return f"max |Δ| on {graph.compared_output} ≤ {graph.tolerance:.3g}"
    return (f"mean cosine of {graph.primary_output} to fp32 PyTorch ≥ {QUANTIZED_MIN_MEAN_COSINE:g} and min cosine ≥ "
            f"{QUANTIZED_MIN_COSINE:g} (quantised: measured, not asserted to {graph.tolerance:.3g})")


def parity_failures(results: Sequence[ParityResult], tolerance: float, quantize: str) -> list[str]:
    """Human-readable reasons why `results` fail: fp32 within `tolerance`, quantised by cosine; empty = pass."""
    failures = []
    for r in results:
        if quantize == "none":
            if not r.max_abs_diff <= tolerance:
                failures.append(f"batch {r.batch_size}: max |Δ| on {r.compared} = {r.max_abs_diff:.3g} > "
                                f"{tolerance:.3g}")
        else:
            if not r.mean_cosine >= QUANTIZED_MIN_MEAN_COSINE:
                failures.append(f"batch {r.batch_size}: mean cosine {r.mean_cosine:.6f} < "
                                f"{QUANTIZED_MIN_MEAN_COSINE:g}")
            if not r.min_cosine >= QUANTIZED_MIN_COSINE:
                failures.append(f"batch {r.batch_size}: min cosine {r.min_cosine:.6f} < {QUANTIZED_MIN_COSINE:g}")
    return failures


def random_images(n: int, size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                  seed: int = PARITY_SEED) -> np.ndarray:
    """Deterministic N×3×H×W float32 batch normalised like real data: random 8-bit RGB pixels (smoothed a little, so
    the network sees structure rather than pure noise), ×1/255, (x − mean)/std."""
    h, w = size
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 3, h, w)).astype(np.float32)
    # a cheap 2×2 box blur keeps values in [0, 255]
    pixels = (pixels + np.roll(pixels, 1, axis=2) + np.roll(pixels, 1, axis=3) + np.roll(pixels, (1, 1), (2, 3))) / 4
    pixels = np.round(pixels) / 255.0
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((pixels - m) / s).astype(np.float32)


def images_from_dir(directory: str | Path, n: int, transform) -> tuple[np.ndarray, int]:
    """The first `n` images (sorted, recursive) of `directory` through the project's eval `transform`, repeated
    cyclically if there are fewer; returns (batch, number of distinct files)."""
    from data.readers import decode_image

    directory = Path(directory)
    if not directory.is_dir():
        raise ExportError(f"--images {directory}: not a directory")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)[:n]
    if not files:
        raise ExportError(f"--images {directory}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    tensors = [transform(decode_image(p.read_bytes(), str(p))).numpy() for p in files]
    batch = np.stack([tensors[i % len(tensors)] for i in range(n)]).astype(np.float32)
    return batch, len(files)


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints of this tool


def load_model_from_checkpoint(checkpoint_path: str | Path):
    """(model in eval mode on CPU, parsed params, checkpoint dict), rebuilt by its task from the params stored inside."""
    from engine.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint_path
    from engine.params import parse_params
    from engine.tasks import task_module

    path = resolve_checkpoint_path(checkpoint_path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt["params"], dict):
        raise CheckpointError(f"{path}: 'params' is not a params object (found {type(ckpt['params']).__name__})")
    params = parse_params(ckpt["params"], f"{path} (stored params)")
    if ckpt["task"] != params.task:
        raise CheckpointError(f"{path}: checkpoint task {ckpt['task']!r} differs from its params' task "
                              f"{params.task!r}")
    model = task_module(params.task).rebuild_model(params, ckpt, path)
    model.eval()
    return model, params, ckpt


def _parse_batch_sizes(batch_check: Sequence[int] | str) -> list[int]:
    if isinstance(batch_check, str):
        try:
            sizes = [int(part) for part in batch_check.split(",") if part.strip()]
        except ValueError:
            raise ExportError(f"--batch-check: expected comma-separated batch sizes such as 1,4; found "
                              f"{batch_check!r}") from None
    else:
        sizes = [int(s) for s in batch_check]
    if not sizes or any(s < 1 for s in sizes):
        raise ExportError(f"--batch-check: expected one or more batch sizes ≥ 1; found {batch_check!r}")
    return sizes


def check_out_path(out_path: str | Path) -> None:
    """--out may replace an earlier export of this tool, nothing else: a mistyped --out (e.g. the checkpoint itself)
    must not destroy a user's file."""
    out_path = Path(out_path)
    if not out_path.exists() and not out_path.is_symlink():
        return
    if not out_path.is_file():
        raise ExportError(f"--out: {out_path} exists and is not a file; expected a path for the .onnx file")
    marker = None
    try:
        import onnx

        model = onnx.load(str(out_path), load_external_data=False)
        marker = {entry.key: entry.value for entry in model.metadata_props}.get("exported_by")
    except Exception:  # noqa: BLE001 - anything that does not parse as ONNX is not an earlier export
        pass
    if marker != EXPORTED_BY:
        raise ExportError(f"--out: {out_path} exists and is not an ONNX model exported by this tool; refusing to "
                          "overwrite it: choose another --out or remove the file")


def _trace_batch(array: np.ndarray) -> np.ndarray:
    """Two rows to trace with, so that nothing specialises on a batch of 1."""
    rows = array[:2]
    return np.ascontiguousarray(np.concatenate([rows, rows])[:2] if len(rows) < 2 else rows)


def graph_out_path(out_path: Path, graph: ExportGraph) -> Path:
    return out_path if not graph.name else out_path.with_name(f"{out_path.stem}.{graph.name}{out_path.suffix}")


def export_checkpoint(checkpoint_path: str | Path, out_path: str | Path, opset: int = DEFAULT_OPSET,
                      quantize: str = "none", batch_check: Sequence[int] | str = (1, 4),
                      images_dir: Optional[str | Path] = None, exporter: str = "torchscript") -> list[ExportReport]:
    """Export a checkpoint of this tool: the model is rebuilt by its task, which also names its graphs
    (``export_graphs(model, params, checkpoint, batch, images_dir)`` of the task module); each graph is written with
    its metadata after its parity check passed. Returns one report per graph."""
    from engine.checkpoint import resolve_checkpoint_path
    from engine.tasks import task_module

    if quantize not in QUANTIZE_CHOICES:
        raise ExportError(f"quantize: expected one of {', '.join(QUANTIZE_CHOICES)}; found {quantize!r}")
    sizes = _parse_batch_sizes(batch_check)
    out_path = Path(out_path)
    source = resolve_checkpoint_path(checkpoint_path)
    model, params, ckpt = load_model_from_checkpoint(source)
    export_graphs = getattr(task_module(params.task), "export_graphs", None)
    if not callable(export_graphs):
        raise ExportError(f"{source}: task {params.task!r} does not export ONNX graphs (its module has no "
                          "export_graphs)")
    graphs = export_graphs(model, params, ckpt, batch=max(sizes), images_dir=images_dir)
    for graph in graphs:
        check_out_path(graph_out_path(out_path, graph))
    checkpoint_facts = {"source_checkpoint": str(Path(source).resolve()), "checkpoint_epoch": str(ckpt.get("epoch", "")),
                        "checkpoint_best": ckpt.get("best") or {}, "quantization": QUANTIZATION_TEXT[quantize]}
    return [_export_graph(graph, graph_out_path(out_path, graph), source, params.task, checkpoint_facts, sizes,
                          opset, exporter, quantize) for graph in graphs]


def _export_graph(graph: ExportGraph, out_path: Path, source: Path, task: str, checkpoint_facts: dict,
                  sizes: list[int], opset: int, exporter: str, quantize: str) -> ExportReport:
    import torch

    started = time.monotonic()
    report = ExportReport(out_path=str(out_path), source_checkpoint=str(source), task=task,
                          outputs=list(graph.output_names), opset=opset, exporter=exporter, quantize=quantize,
                          parity_inputs=graph.inputs_description, threshold=threshold_text(graph, quantize),
                          **graph.report)

    def verify(onnx_model) -> dict:
        report.parity = measure_parity(session_from_model(onnx_model), graph, sizes)
        failures = parity_failures(report.parity, graph.tolerance, quantize)
        if failures:
            kept = " (the file there was left unchanged)" if out_path.exists() else " (no file was written)"
            raise ExportError(f"{source}: ONNX Runtime vs PyTorch parity failed for {out_path}{kept}: "
                              f"{'; '.join(failures)}; threshold: {report.threshold}")
        report.passed = True
        return {"parity": {"threshold": report.threshold, "inputs": graph.inputs_description,
                           "results": [dataclasses.asdict(r) for r in report.parity]}}

    if graph.static_batch is None:
        example = tuple(torch.from_numpy(_trace_batch(array)) for array in graph.inputs.values())
        dynamic_axes = {name: {0: "batch"} for name in [*graph.inputs, *graph.output_names]}
    else:
        sizes = [graph.static_batch]
        example = tuple(torch.from_numpy(np.ascontiguousarray(a[:graph.static_batch])) for a in graph.inputs.values())
        dynamic_axes = None
    export_module(graph.module, example, list(graph.inputs), graph.output_names, dynamic_axes,
                  {**graph.metadata, **checkpoint_facts}, out_path, opset=opset, exporter=exporter,
                  postprocess=QUANTIZERS[quantize], verify=verify)
    report.opset = max(opset, 18) if exporter == "dynamo" else opset
    report.file_bytes = out_path.stat().st_size
    report.seconds = round(time.monotonic() - started, 3)
    return report


# ---------------------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint of this tool (RUN/model_best.pth) or a run "
                        "directory (its model_best.pth is used)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                        help="int8: dynamic int8 (ONNX Runtime); fp16: half precision; parity is measured and must "
                        f"keep mean cosine ≥ {QUANTIZED_MIN_MEAN_COSINE:g}")
    parser.add_argument("--batch-check", default="1,4", help="batch sizes of the parity check (default %(default)s)")
    parser.add_argument("--images", default=None, help="folder of images for the parity check (default: "
                        "deterministic random images)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="torchscript",
                        help="torch.onnx exporter (default %(default)s; dynamo needs opset ≥ 18)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    reports = export_checkpoint(args.checkpoint, args.out, opset=args.opset, quantize=args.quantize,
                                batch_check=args.batch_check, images_dir=args.images, exporter=args.exporter)
    for report in reports:
        worst = max(report.parity, key=lambda r: r.max_abs_diff)
        print(f"exported {report.source_checkpoint} → {report.out_path} ({report.file_bytes / 1e6:.1f} MB, "
              f"{report.task}, {report.model}, input {'×'.join(str(v) for v in report.input_size)}); parity on "
              f"{worst.compared}: max |Δ| {worst.max_abs_diff:.3g}, mean cosine "
              f"{min(r.mean_cosine for r in report.parity):.6f} ({report.threshold})", file=sys.stderr)
    # one graph: its report; several (a tracker's template and search graphs): a list of them
    print(reports[0].to_json() if len(reports) == 1 else json.dumps([r.to_dict() for r in reports], indent=2))
    return 0


def run_cli(argv: Optional[Sequence[str]] = None) -> int:
    """`main` with the command-line convention: a UserError prints one ``error: …`` line (no traceback), exit 2."""
    return run_command(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run_cli())
