"""Bad-input catalogue (issue 7): every case is refused with one clear line (what, where, expected, found), a non-zero
exit code and no traceback, and nothing that was already written is changed.

Most cases call ``train.main([...])`` / ``evaluator.main([...])`` in this process (a subprocess costs ~10 s of torch
import); the edge that turns a UserError into ``error: …`` + exit code 2 is checked by a few real subprocesses at the
end. Cases already covered elsewhere are not repeated here but counted in the catalogue:

* tests/test_params.py: 24 params errors (misspelt and unknown keys with a suggestion, missing key, wrong types,
  ranges, triplet without P×K, K < 2, crop larger than the padded image, contradicting seed spellings, …), all
  errors at once, malformed JSON with line/column, missing params file — 27 cases;
* tests/test_checkpoint.py: pickle payload refused and not executed, truncated / text / missing / foreign-dict /
  pickled-list checkpoints, weights of another shape / missing weights — 8 cases;
* tests/test_service.py: start_train into an existing run directory, ``--sub_working_dir ../evil``, resume with a
  changed model, ``--resume 7`` of a missing epoch — 4 cases;
* tests/test_engine.py: unknown evaluator — 1 case.

Here: 59 more (train.py 28, evaluator.py 22, deploy.export / data.pack 3, paths and caches 6; three of them need a
change in engine/service.py), plus the safety checks (weights-only loading, pickle-free caches and
packs, paths that must not overwrite anything), two property-based tests and three real command lines.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evaluator
import train
from conftest import tiny_params, write_params
from engine.checkpoint import save_atomic
from engine.errors import UserError
from engine.params import EvalParams, ParamsError, params_to_json, parse_eval_params, parse_params
from networks.reid_params import ReidParams
from engine.run_dir import RunDir, RunState

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def _restore(restore_process_state):
    yield


def refused(argv: list[str], *fragments: str, module=train) -> str:
    """Run a CLI's main in-process; it must raise a UserError whose single-line message holds every fragment."""
    with pytest.raises(UserError) as info:
        module.main([str(a) for a in argv])
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message
    return message


def snapshot(path: Path) -> dict[str, str]:
    """Every file under `path` (or `path` itself) → sha256, to prove that nothing was changed."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def config(tmp_path: Path, data: Path, name: str = "params.json", **overrides) -> Path:
    params = tiny_params(data, tmp_path / "runs", evaluation_params={"type": None}, **overrides)
    return write_params(tmp_path / name, params)


def train_args(cfg: Path, run: str = "r", *extra: str) -> list[str]:
    return ["--operation", "train", "--config_path", str(cfg), "--sub_working_dir", run, *extra]


def copy_train_images(src: Path, dst: Path, keep=lambda name: True) -> Path:
    """A flat directory of Market-named training images (a copy of `src`/bounding_box_train, filtered)."""
    dst.mkdir(parents=True)
    for image in sorted((src / "bounding_box_train").iterdir()):
        if keep(image.name):
            shutil.copy(image, dst / image.name)
    return dst


def checkpoint_dict(params: dict, num_classes: int, **changes) -> dict:
    """A checkpoint of this tool for `params` (random weights), as evaluator.py reads it."""
    from networks.factory import build_model

    parsed = parse_params(params)
    model = build_model(parsed.task, parsed.model_params, num_classes, False)
    data = {"format_version": 1, "task": parsed.task, "num_classes": num_classes,
            "params": json.loads(params_to_json(parsed)), "class_names": [f"{i:04d}" for i in range(1, num_classes + 1)],
            "model": model.state_dict()}
    data.update(changes)
    return data


class Payload:
    """Unpickling this runs Path.touch(marker): the proof that a loader executed code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def tool_checkpoint(tiny_market, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model_best.pth"
    torch.save(checkpoint_dict(tiny_params(tiny_market, path.parent / "runs"), 8), path)
    return path


def eval_config(tmp_path: Path, checkpoint: Path, **entries) -> Path:
    data = {"model_path": str(checkpoint), "num_preprocess_workers": 0, "batch_size": 32,
            "result_log_file": str(tmp_path / "result.json"), **entries}
    path = tmp_path / "eval_params.json"
    path.write_text(json.dumps(data))
    return path


def make_run(tmp_path: Path, data: Path, name: str = "r", state: str = "stopped", **overrides) -> tuple[Path, RunDir]:
    """A run directory as a stopped run leaves it: params.json, run_state.json, latest.pth (from a real Trainer)."""
    from engine.trainer import Trainer

    cfg = config(tmp_path, data, **overrides)
    run = RunDir(tmp_path / "runs" / name)
    run.path.mkdir(parents=True)
    params = parse_params(json.loads(cfg.read_text()))
    trainer = Trainer(params, run)
    save_atomic(trainer.checkpoint_dict(), run.latest)
    run.params.write_text(params_to_json(params) + "\n")
    run.write_state(RunState(state=state, pid=None, epochs=params.epochs))
    (run.path / "train_log").write_text("earlier log\n")
    return cfg, run


# ---------------------------------------------------------------------------------------------------------------------
# train.py: refused before anything is written

def test_config_path_is_a_directory(tmp_path):
    refused(train_args(tmp_path, "r"), str(tmp_path), "cannot read", "Is a directory")
    assert list(tmp_path.iterdir()) == []


def test_config_not_utf8(tmp_path):
    cfg = tmp_path / "params.json"
    cfg.write_bytes(b'{"batches_dir": "\xff\xfe"}')
    refused(train_args(cfg), str(cfg), "cannot read", "utf-8")


def test_missing_dataset_dir(tmp_path):
    cfg = config(tmp_path, tmp_path / "no_such_data")
    refused(train_args(cfg), "batches_dir", str(tmp_path / "no_such_data"), "does not exist", "expected")
    assert not (tmp_path / "runs").exists()


def test_pretrain_snapshot_missing(tmp_path, tiny_market):
    cfg = config(tmp_path, tiny_market, pretrain_snapshot=str(tmp_path / "nope.pth"))
    refused(train_args(cfg), "pretrain_snapshot", "nope.pth", "does not exist")
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_missing_run(tmp_path, tiny_market):
    cfg = config(tmp_path, tiny_market)
    refused(train_args(cfg, "never_ran", "--resume", "latest"), "--resume latest",
            str(tmp_path / "runs" / "never_ran" / "latest.pth"), "does not exist")
    assert not (tmp_path / "runs").exists()


def test_resume_without_a_run_name(tmp_path, tiny_market):
    cfg = config(tmp_path, tiny_market)
    refused(["--operation", "train", "--config_path", cfg, "--resume", "latest"], "--sub_working_dir")


def test_nproc_zero(tmp_path, tiny_market):
    refused(train_args(config(tmp_path, tiny_market), "r", "--nproc", "0"), "--nproc", "≥ 1", "found 0")
    assert not (tmp_path / "runs").exists()


def test_status_without_config():
    refused(["--operation", "status"], "--config_path")


def test_stop_train_of_a_run_that_does_not_exist(tmp_path, tiny_market):
    cfg = config(tmp_path, tiny_market)
    refused(["--operation", "stop_train", "--config_path", cfg, "--sub_working_dir", "ghost"],
            str(tmp_path / "runs" / "ghost"), "no run_state.json")


def test_stop_train_of_a_run_that_is_not_running(tmp_path, tiny_market, capsys):
    run = RunDir(tmp_path / "runs" / "done")
    run.path.mkdir(parents=True)
    run.write_state(RunState(state="finished", pid=None, epochs=2, epoch=2))
    before = snapshot(run.path)
    code = train.main(["--operation", "stop_train", "--config_path", str(config(tmp_path, tiny_market)),
                       "--sub_working_dir", "done"])
    assert code == 1
    assert "is not running (state: finished)" in capsys.readouterr().out
    assert snapshot(run.path) == before and not run.stop_file.exists()


def test_truncated_checkpoint_on_resume(tmp_path, tiny_market):
    cfg, run = make_run(tmp_path, tiny_market)
    run.latest.write_bytes(run.latest.read_bytes()[:100_000])
    before = snapshot(run.path)
    refused(train_args(cfg, "r", "--resume", "latest"), str(run.latest), "truncated or not a PyTorch checkpoint")
    assert snapshot(run.path) == before


def test_pickle_payload_checkpoint_on_resume(tmp_path, tiny_market):
    cfg, run = make_run(tmp_path, tiny_market)
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "pwned"
    torch.save({**torch.load(run.latest, weights_only=True), "extra": Payload(marker)}, evil)
    before = snapshot(run.path)
    refused(train_args(cfg, "r", "--resume", str(evil)), str(evil), "refused", "weights-only")
    assert not marker.exists()
    assert snapshot(run.path) == before


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path, tiny_market):
    cfg, run = make_run(tmp_path, tiny_market)
    before = snapshot(run.path)
    refused(train_args(cfg, "r", "--resume", str(run.params)), str(run.params), "not a PyTorch checkpoint")
    assert snapshot(run.path) == before


# ---------------------------------------------------------------------------------------------------------------------
# train.py: refused when the run starts (the data, the model and the machine are looked at)

def test_fp16_on_cpu(tmp_path, tiny_market):
    refused(train_args(config(tmp_path, tiny_market, amp="fp16")), "amp", "fp16", "CUDA", "bf16")


def test_parallels_without_cuda(tmp_path, tiny_market):
    if torch.cuda.is_available():
        pytest.skip("checks the refusal of CUDA settings, which only a machine without CUDA gives")
    refused(train_args(config(tmp_path, tiny_market, parallels=[0])), "parallels", "[0]", "CUDA is not available",
            '"parallels": []')


@pytest.mark.parametrize("overrides", [{"amp": "fp16"}, {"parallels": [0]}], ids=["fp16", "parallels"])
def test_machine_contradictions_refused_before_a_run_dir_exists(tmp_path, tiny_market, overrides):
    if torch.cuda.is_available():
        pytest.skip("checks the refusal of CUDA settings, which only a machine without CUDA gives")
    refused(train_args(config(tmp_path, tiny_market, **overrides)), "CUDA")
    assert not (tmp_path / "runs").exists()  # no failed run directory left behind, no workers started


def test_empty_dataset_dir(tmp_path):
    (tmp_path / "data").mkdir()
    refused(train_args(config(tmp_path, tmp_path / "data")), str(tmp_path / "data"), "no images found", "Expected")


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_corrupt_image_names_the_file(tmp_path, tiny_market, damage):
    data = copy_train_images(tiny_market, tmp_path / "data")
    victims = sorted(data.glob("0001_*.jpg"))  # every image of one identity: met within the first two steps
    for victim in victims:
        victim.write_bytes(victim.read_bytes()[:200] if damage == "truncated" else b"")
    message = refused(train_args(config(tmp_path, data)), "cannot decode image", str(data / "0001_"))
    assert ("empty file" in message) == (damage == "empty")
    assert RunDir(tmp_path / "runs" / "r").read_state().state == "failed"


def test_file_name_that_does_not_parse(tmp_path, tiny_market):
    data = copy_train_images(tiny_market, tmp_path / "data")
    shutil.copy(next(data.iterdir()), data / "holiday.jpg")
    refused(train_args(config(tmp_path, data)), str(data / "holiday.jpg"), "does not parse", "0002_c1s1_000451_03.jpg")


def test_fewer_identities_than_p(tmp_path, tiny_market):
    refused(train_args(config(tmp_path, tiny_market, batch_sampling_params={"P": 20})), "P=20", "the training set has 8",
            "lower batch_sampling_params.P")


def test_fewer_images_than_one_plain_batch(tmp_path, tiny_market):
    cfg = config(tmp_path, tiny_market, tri_loss_params={"margin": 0},
                 batch_sampling_params={"class_balanced": False, "batch_size": 64})
    refused(train_args(cfg), "batch size 64", "the training set has 50", "lower batch_sampling_params.batch_size")


def test_identities_with_one_image_train(tmp_path, tiny_market):
    """Not an error: identities with fewer than K images are drawn with replacement."""
    single = {"0001", "0002", "0003", "0004"}
    seen: set[str] = set()

    def keep(name):
        pid = name.split("_")[0]
        if pid in single:
            if pid in seen:
                return False
            seen.add(pid)
        return True

    data = copy_train_images(tiny_market, tmp_path / "data", keep)
    assert len(list(data.glob("0001_*"))) == 1
    assert train.main(train_args(config(tmp_path, data, epochs=1))) == 0
    assert RunDir(tmp_path / "runs" / "r").read_state().state == "finished"


def test_lmdb_path_that_is_not_a_pack(tmp_path, tiny_market):
    fake = tmp_path / "pack"
    fake.mkdir()
    (fake / "data.mdb").write_bytes(b"definitely not lmdb " * 100)
    refused(train_args(config(tmp_path, fake)), str(fake / "data.mdb"), "not an LMDB file", "python -m data.pack")


def test_lmdb_pack_with_an_empty_database_file(tmp_path):
    fake = tmp_path / "pack"
    fake.mkdir()
    (fake / "data.mdb").write_bytes(b"")
    refused(train_args(config(tmp_path, fake)), str(fake / "data.mdb"), "empty file", "python -m data.pack")


def test_imagenet_pretrain_without_cached_weights(tmp_path, tiny_market, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    where = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    refused(train_args(config(tmp_path, tiny_market, imagenet_pretrain=True)), "imagenet_pretrain",
            f"not at {where}", "Nothing is downloaded", "put")


def test_pretrain_snapshot_of_a_different_model(tmp_path, tiny_market):
    other = tiny_params(tiny_market, tmp_path / "runs", model_params={"feature_dim": 64})
    snapshot_path = tmp_path / "other.pth"
    torch.save(checkpoint_dict(other, 8), snapshot_path)
    before = snapshot(snapshot_path)
    refused(train_args(config(tmp_path, tiny_market, pretrain_snapshot=str(snapshot_path))), str(snapshot_path),
            "weights do not fit this model", "shape mismatch", "(64,) vs (32,)", "different model_params")
    assert snapshot(snapshot_path) == before


def test_resume_with_a_checkpoint_for_another_number_of_classes(tmp_path, tiny_market):
    data = copy_train_images(tiny_market, tmp_path / "data")
    seven = copy_train_images(tiny_market, tmp_path / "seven", lambda name: not name.startswith("0008_"))
    cfg_seven, run = make_run(tmp_path, seven)
    # the run was made on 7 identities; its data directory now holds 8 (e.g. images added under the same path)
    for path in (run.params, cfg_seven):
        path.write_text(path.read_text().replace(str(seven), str(data)))
    ckpt = torch.load(run.latest, weights_only=True)
    ckpt["params"]["batches_dir"] = str(data)
    save_atomic(ckpt, run.latest)
    before = snapshot(run.latest)
    refused(train_args(cfg_seven, "r", "--resume", "latest"), str(run.latest), "num_classes=7", "with num_classes=8")
    assert snapshot(run.latest) == before


def test_working_dir_is_a_file(tmp_path, tiny_market):
    (tmp_path / "runs").write_text("not a directory")
    refused(train_args(config(tmp_path, tiny_market)), "working_dir", str(tmp_path / "runs"), "not a directory")
    assert (tmp_path / "runs").read_text() == "not a directory"


# ---------------------------------------------------------------------------------------------------------------------
# evaluator.py

def test_eval_params_malformed_json(tmp_path):
    path = tmp_path / "eval_params.json"
    path.write_text('{\n  "model_path": "m.pth"\n  "batch_size": 4\n}')
    refused([path], str(path), "malformed JSON at line 3, column 3", module=evaluator)


def test_eval_params_misspelt_key(tmp_path, tool_checkpoint):
    refused([eval_config(tmp_path, tool_checkpoint, flip_tset=True)], "unknown key 'flip_tset'",
            "did you mean 'flip_test'?", module=evaluator)


def test_eval_params_wrong_type(tmp_path, tool_checkpoint):
    refused([eval_config(tmp_path, tool_checkpoint, batch_size="64")], "key 'batch_size'",
            "valid integer", 'found "64" (str)', module=evaluator)


def test_eval_params_missing_model_path(tmp_path):
    path = tmp_path / "eval_params.json"
    path.write_text("{}")
    refused([path], "missing required key 'model_path'", module=evaluator)


def test_eval_model_path_missing(tmp_path):
    refused([eval_config(tmp_path, tmp_path / "gone.pth")], str(tmp_path / "gone.pth"), "not found", module=evaluator)


def test_eval_bare_state_dict(tmp_path, tiny_market):
    bare = tmp_path / "bare.pth"
    torch.save(checkpoint_dict(tiny_params(tiny_market, tmp_path), 8)["model"], bare)
    refused([eval_config(tmp_path, bare)], str(bare), "not a checkpoint of this tool", "expected keys",
            module=evaluator)


def test_eval_checkpoint_of_a_different_model(tmp_path, tiny_market):
    """The stored params say feature_dim 32, the weights are of a 64-wide model (e.g. a hand-assembled file)."""
    mixed = tmp_path / "mixed.pth"
    weights = checkpoint_dict(tiny_params(tiny_market, tmp_path, model_params={"feature_dim": 64}), 8)["model"]
    torch.save(checkpoint_dict(tiny_params(tiny_market, tmp_path), 8, model=weights), mixed)
    refused([eval_config(tmp_path, mixed)], str(mixed), "weights do not fit this model", "shape mismatch",
            module=evaluator)


def test_eval_checkpoint_for_another_number_of_classes(tmp_path, tiny_market):
    wrong = tmp_path / "wrong.pth"
    data = checkpoint_dict(tiny_params(tiny_market, tmp_path), 8)
    data["num_classes"] = 5  # e.g. a hand-edited or mixed-up file: the classifier has 8 outputs
    torch.save(data, wrong)
    refused([eval_config(tmp_path, wrong)], str(wrong), "classifier.weight (8, 32) vs (5, 32)", module=evaluator)


def test_eval_pickle_payload_checkpoint(tmp_path, tiny_market):
    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    torch.save({**checkpoint_dict(tiny_params(tiny_market, tmp_path), 8), "extra": Payload(marker)}, evil)
    refused([eval_config(tmp_path, evil)], str(evil), "refused", module=evaluator)
    assert not marker.exists()


def test_eval_truncated_checkpoint(tmp_path, tool_checkpoint):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(tool_checkpoint.read_bytes()[:-5000])
    refused([eval_config(tmp_path, cut)], str(cut), "truncated or not a PyTorch checkpoint", module=evaluator)


def test_eval_onnx_file_that_is_not_onnx(tmp_path, tiny_market):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"PK\x03\x04 a zip, not a protobuf" * 20)
    refused([eval_config(tmp_path, junk, data_dir=str(tiny_market))], str(junk), "not a loadable ONNX model",
            "deploy.export", module=evaluator)


def test_eval_foreign_onnx(tmp_path, tiny_market):
    import onnx

    node = onnx.helper.make_node("Flatten", ["images"], ["features"])
    graph = onnx.helper.make_graph(
        [node], "foreign", [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 3, 64, 32])],
        [onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["N", 6144])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8),
              str(foreign))
    refused([eval_config(tmp_path, foreign, data_dir=str(tiny_market))], str(foreign),
            "not one exported by this tool", "found no metadata", module=evaluator)


def test_eval_onnx_without_data_dir(tmp_path, tool_checkpoint):
    from deploy.export import export_checkpoint

    refused([eval_config(tmp_path, tmp_path / "m.onnx")], "m.onnx: ONNX model file not found", module=evaluator)
    export_checkpoint(tool_checkpoint, tmp_path / "m.onnx", batch_check=(1,))
    refused([eval_config(tmp_path, tmp_path / "m.onnx")], "data_dir", "required", "ONNX", module=evaluator)


def test_eval_data_with_no_valid_query(tmp_path, tiny_market, tool_checkpoint):
    data = tmp_path / "eval"
    shutil.copytree(tiny_market / "query", data / "query")
    (data / "bounding_box_test").mkdir()
    for image in (tiny_market / "bounding_box_test").iterdir():  # only distractors and junk: no query is answerable
        if image.name.startswith(("0000_", "-1_")):
            shutil.copy(image, data / "bounding_box_test" / image.name)
    refused([eval_config(tmp_path, tool_checkpoint, data_dir=str(data))], str(data), "no valid query",
            "absent from the gallery", module=evaluator)
    assert not (tmp_path / "result.json").exists()


def test_eval_data_dir_missing(tmp_path, tool_checkpoint):
    refused([eval_config(tmp_path, tool_checkpoint, data_dir=str(tmp_path / "nope"))], str(tmp_path / "nope"),
            "evaluation data not found", module=evaluator)


def test_eval_data_dir_of_the_wrong_layout(tmp_path, tiny_market, tool_checkpoint):
    refused([eval_config(tmp_path, tool_checkpoint, data_dir=str(tiny_market / "bounding_box_train"))],
            "not a known re-ID evaluation layout", "query/", module=evaluator)


def test_eval_gpus_without_cuda(tmp_path, tool_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("checks the refusal of CUDA settings, which only a machine without CUDA gives")
    refused([eval_config(tmp_path, tool_checkpoint, gpus=[0])], "gpus", "CUDA is not available", module=evaluator)


def test_eval_model_params_contradicting_the_checkpoint(tmp_path, tool_checkpoint):
    refused([eval_config(tmp_path, tool_checkpoint, model_params={"feature_dim": 64})], "model_params",
            "feature_dim", "'feature_dim': 32", module=evaluator)


def test_eval_unknown_benchmark_type(tmp_path, tool_checkpoint):
    refused([eval_config(tmp_path, tool_checkpoint, benchmark_type="lfw_evaluate")], "benchmark_type",
            "unknown evaluator 'lfw_evaluate'", "market_evaluate", module=evaluator)


PLUGINS = {
    "not_a_tuple": ("return [0.5]", "it returned list"),
    "text_metric": ("return {'acc': 'high'}, 'acc'", "metric 'acc' is 'high' (str)"),
    "missing_primary": ("return {'acc': 0.5}, 'rank1'", "primary is 'rank1', not among ['acc']"),
}


@pytest.mark.parametrize("kind", PLUGINS)
def test_eval_plugin_returning_the_wrong_type(tmp_path, tool_checkpoint, monkeypatch, kind):
    body, expected = PLUGINS[kind]
    package = f"badplugins_{kind}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    plugin = tmp_path / package / "my_eval.py"
    plugin.write_text(f"def run_eval(params, model, device, **context):\n    {body}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    refused([eval_config(tmp_path, tool_checkpoint, benchmark_type=f"{package}.my_eval")],
            f"evaluator '{package}.my_eval' ({plugin})", "run_eval must return (metrics: dict[str, float], primary",
            expected, module=evaluator)
    assert not (tmp_path / "result.json").exists()


# ---------------------------------------------------------------------------------------------------------------------
# other command-line tools

def test_export_of_a_pickle_payload_checkpoint(tmp_path, tiny_market, capsys):
    from deploy import export

    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    torch.save({**checkpoint_dict(tiny_params(tiny_market, tmp_path), 8), "extra": Payload(marker)}, evil)
    assert export.run_cli(["--checkpoint", str(evil), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {evil}: refused") and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()


def test_export_refuses_to_overwrite_a_file_that_is_not_an_export(tmp_path, tool_checkpoint, capsys):
    from deploy import export

    precious = tmp_path / "notes.onnx"
    precious.write_text("my notes")
    assert export.run_cli(["--checkpoint", str(tool_checkpoint), "--out", str(precious)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not an ONNX model exported by this tool" in err and "refusing to overwrite" in err
    assert precious.read_text() == "my notes"


def test_pack_of_a_source_that_is_not_a_dataset(tmp_path, capsys):
    from data import pack

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("hello")
    assert pack.main([str(tmp_path / "src"), str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no images found" in err and "readme.txt" in err
    assert not (tmp_path / "dst").exists()


# ---------------------------------------------------------------------------------------------------------------------
# safety: nothing is unpickled, nothing outside the run directory is overwritten

SOURCE_DIRS = ("engine", "data", "evaluate", "deploy", "networks", "trackers", "bench")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if isinstance(func, ast.Name):
                owner = None  # a plain function call: eval(...), exec(...)
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                owner = func.value.id  # torch.load, np.load, pickle.loads, ...
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute):
                owner = func.value.attr  # torch.jit.load
            else:
                owner = ""
            yield owner, name, {k.arg: k.value for k in node.keywords}, node.lineno


def test_every_load_in_the_code_is_weights_only_or_pickle_free():
    files = [ROOT / "train.py", ROOT / "evaluator.py"]
    for directory in SOURCE_DIRS:
        files += sorted((ROOT / directory).rglob("*.py")) if (ROOT / directory).is_dir() else []
    problems, torch_loads = [], 0
    for path in files:
        for owner, name, keywords, line in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{line}"
            if owner == "torch" and name == "load":
                torch_loads += 1
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif owner in ("np", "numpy") and name == "load":
                value = keywords.get("allow_pickle")
                if not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{where}: np.load without allow_pickle=False")
            elif owner in ("pickle", "dill", "joblib", "cloudpickle", "marshal", "shelve") and name in (
                    "load", "loads", "open", "Unpickler"):
                problems.append(f"{where}: {owner}.{name}")
            elif owner == "jit" and name == "load":
                problems.append(f"{where}: torch.jit.load (a TorchScript archive can run code)")
            elif owner is None and name in ("eval", "exec"):
                problems.append(f"{where}: {name}()")
    assert not problems, "\n".join(problems)
    assert torch_loads >= 2  # engine/checkpoint.py and networks/backbones.py at least


def test_feature_cache_with_a_pickle_payload_is_refused_and_not_executed(tmp_path):
    from evaluate.features import FeatureCacheError, load_feature_cache

    marker, cache = tmp_path / "pwned", tmp_path / "features.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = Payload(marker)
    np.savez(cache, fingerprint=np.array("x"), query=payload)
    with pytest.raises(FeatureCacheError, match="cannot be read without unpickling"):
        load_feature_cache(cache, "x")
    assert not marker.exists()


def test_feature_cache_round_trip_holds_plain_arrays_only(tmp_path):
    from evaluate.features import load_feature_cache, save_feature_cache

    cache = tmp_path / "features.npz"
    save_feature_cache(cache, "fp", query=np.ones((2, 3), np.float32), gallery=np.zeros((4, 3), np.float32))
    with np.load(cache, allow_pickle=False) as data:
        assert {name: data[name].dtype.kind for name in data.files} == {"fingerprint": "U", "query": "f",
                                                                         "gallery": "f"}
    assert load_feature_cache(cache, "other") is None  # another model: recomputed
    assert load_feature_cache(cache, "fp")["gallery"].shape == (4, 3)
    save_feature_cache(cache, "fp2", query=np.ones((1, 3), np.float32))  # an earlier cache may be replaced
    assert load_feature_cache(cache, "fp2")["query"].shape == (1, 3)


@pytest.mark.parametrize("key", ["feature_path", "result_log_file"])
def test_eval_output_paths_never_overwrite_a_users_file(tmp_path, tool_checkpoint, key):
    precious = tmp_path / "thesis.txt"
    precious.write_text("three years of work")
    refused([eval_config(tmp_path, tool_checkpoint, **{key: str(precious)})], key, str(precious),
            "refusing to overwrite", module=evaluator)
    assert precious.read_text() == "three years of work"


def test_result_log_file_may_replace_an_earlier_result(tmp_path):
    earlier = tmp_path / "result.json"
    earlier.write_text(json.dumps({"model_path": "m.pth", "benchmark_type": "market_evaluate", "primary": "rank1",
                                   "metrics": {"rank1": 0.5}}))
    evaluator.check_result_target(earlier)  # no error: evaluator.py wrote it
    evaluator.check_result_target(tmp_path / "new.json")
    with pytest.raises(UserError, match="not a file"):
        evaluator.check_result_target(tmp_path)


def test_lmdb_pack_holds_only_image_bytes_and_a_json_manifest(tmp_path, tiny_market):
    import lmdb

    from data.pack import pack_dataset
    from data.readers import MANIFEST_KEY

    pack_dataset(tiny_market, tmp_path / "pack")
    env = lmdb.open(str(tmp_path / "pack"), readonly=True, lock=False)
    with env.begin() as txn:
        entries = dict(txn.cursor())
    env.close()
    manifest = json.loads(entries.pop(MANIFEST_KEY).decode("utf-8"))
    assert manifest["format"] == "reid-service-lmdb-pack"
    assert len(entries) == len(manifest["records"]) == 50
    for key, value in entries.items():  # the original encoded file, byte for byte: nothing that could be unpickled
        assert value == (tiny_market / key.decode("utf-8")).read_bytes()
    sources = (ROOT / "data" / "pack.py").read_text() + (ROOT / "data" / "readers.py").read_text()
    assert "pickle" not in sources


def test_synthetic_data_never_touches_an_existing_user_folder(tmp_path):
    folder = tmp_path / "holiday_photos"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"\xff\xd8 my photo")
    before = snapshot(folder)
    cfg = config(tmp_path, folder, synthetic_data={"type": "market", "seed": 0})
    refused(train_args(cfg), str(folder), "data.synthetic", 'remove "synthetic_data" from the params file')
    assert snapshot(folder) == before and sorted(os.listdir(tmp_path)) == ["holiday_photos", "params.json"]


def test_working_dir_with_user_files_is_only_added_to(tmp_path, tiny_market):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    (work / "r").mkdir()  # an empty folder of the run's name may be used
    before = snapshot(work)
    cfg = write_params(tmp_path / "p.json", tiny_params(tiny_market, work, batch_sampling_params={"P": 20}))
    refused(train_args(cfg), "P=20")  # fails after the run directory was set up
    after = snapshot(work)
    assert {k: v for k, v in after.items() if not k.startswith("work/r/")} == before
    assert {"params.json", "run_state.json"} <= set(os.listdir(work / "r"))


def _finished_checkpoint(tmp_path, tiny_market, name):
    """A run whose checkpoint is at its last epoch: resuming it ends at once (no training in these tests)."""
    cfg, run = make_run(tmp_path, tiny_market, name)
    ckpt = torch.load(run.latest, weights_only=True)
    ckpt["epoch"] = ckpt["params"]["epochs"]
    save_atomic(ckpt, run.latest)
    return cfg, run


def test_resume_path_into_another_runs_directory_is_refused(tmp_path, tiny_market):
    cfg, source = _finished_checkpoint(tmp_path, tiny_market, "a")
    other = RunDir(tmp_path / "runs" / "b")
    other.path.mkdir()
    (other.path / "latest.pth").write_bytes(b"run b's own checkpoint")
    other.write_state(RunState(state="stopped"))
    before = snapshot(other.path)
    with pytest.raises(UserError, match="already exists"):
        train.main(train_args(cfg, "b", "--resume", str(source.latest)))
    assert snapshot(other.path) == before


def test_resume_path_alone_outside_a_run_directory_is_refused(tmp_path, tiny_market):
    cfg, source = _finished_checkpoint(tmp_path, tiny_market, "a")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    shutil.copy(source.latest, downloads / "model.pth")
    (downloads / "params.json").write_text('{"my": "own settings"}')
    before = snapshot(downloads)
    with pytest.raises(UserError, match="not a run directory"):
        train.main(["--operation", "train", "--config_path", str(cfg), "--resume", str(downloads / "model.pth")])
    assert snapshot(downloads) == before


# ---------------------------------------------------------------------------------------------------------------------
# property-based: the params loaders accept or refuse with a ParamsError, nothing else

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=False, width=32) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=8)
EVAL_KEYS = list(EvalParams.model_fields) + ["model", "type", "feature_dim", "gpu"]
EVAL_EXAMPLES = 300
MUTATION_EXAMPLES = 300


@settings(max_examples=EVAL_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(EVAL_KEYS), JSON_VALUES, max_size=8)
       | st.fixed_dictionaries({"model_path": st.text(max_size=12)},
                               optional={k: JSON_VALUES for k in EVAL_KEYS if k != "model_path"})
       | JSON_VALUES)
def test_arbitrary_eval_params_load_or_are_refused_cleanly(data):
    try:
        ep = parse_eval_params(data, "e.json")
    except ParamsError as err:
        assert str(err).startswith("e.json: ") and "Traceback" not in str(err)
        return
    assert isinstance(ep, EvalParams)
    assert parse_eval_params(ep.model_dump(mode="json")) == ep


ROOT_PARAMS = json.loads((ROOT / "params.json").read_text())


def _locations(value, path=()):
    """Every (container path, key or index) inside a JSON value."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield path, key
        yield from _locations(child, path + (key,))


def _typos(key: str) -> list[str]:
    swapped = key[1] + key[0] + key[2:] if len(key) > 1 else key + key
    return [key[:-1], key + "s", swapped, key.upper(), key.replace("_", "")]


@st.composite
def mutated_root_params(draw):
    """The repository's params.json with 1–4 random mutations at random depths: a key dropped, a value replaced by
    arbitrary JSON, or a key renamed (a misspelling or arbitrary text)."""
    data = copy.deepcopy(ROOT_PARAMS)
    for _ in range(draw(st.integers(1, 4))):
        locations = list(_locations(data))
        if not locations:
            break
        path, key = draw(st.sampled_from(locations))
        parent = data
        for part in path:
            parent = parent[part]
        action = draw(st.sampled_from(["drop", "replace", "rename"]))
        if action == "drop":
            del parent[key]
        elif action == "replace" or isinstance(parent, list):
            parent[key] = draw(JSON_VALUES)
        else:
            new = draw(st.sampled_from(_typos(str(key))) | st.text(max_size=12))
            parent[new] = parent.pop(key)
    return data


@settings(max_examples=MUTATION_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_root_params())
def test_mutations_of_the_root_params_load_or_are_refused_cleanly(data):
    try:
        p = parse_params(data, "p.json")
    except ParamsError as err:
        assert str(err).startswith("p.json: ") and "Traceback" not in str(err)
        return
    assert isinstance(p, ReidParams)
    assert parse_params(json.loads(params_to_json(p))) is not None


# ---------------------------------------------------------------------------------------------------------------------
# the real command lines: exit code 2, one `error:` line, no traceback (run concurrently: each pays the torch import)

@pytest.fixture(scope="module")
def cli_results(tiny_market, tool_checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    bad_json = base / "bad.json"
    bad_json.write_text('{\n  "batches_dir": "x",\n  "epochs": 3,,\n}')
    data = copy_train_images(tiny_market, base / "data")
    for victim in data.glob("0001_*.jpg"):
        victim.write_bytes(victim.read_bytes()[:200])
    corrupt_cfg = config(base, data, "corrupt.json")
    plugin_dir = base / "plugins" / "cli_badplugin"
    plugin_dir.mkdir(parents=True)
    (plugin_dir / "__init__.py").write_text("")
    (plugin_dir / "ev.py").write_text("def run_eval(params, model, device):\n    return 0.5\n")
    plugin_cfg = base / "plugin_eval.json"
    plugin_cfg.write_text(json.dumps({"model_path": str(tool_checkpoint), "num_preprocess_workers": 0,
                                      "benchmark_type": "cli_badplugin.ev", "result_log_file": str(base / "r.json")}))
    commands = {
        "malformed_json": [ROOT / "train.py", "--operation", "train", "--config_path", bad_json],
        "corrupt_image": [ROOT / "train.py"] + train_args(corrupt_cfg, "c"),
        "bad_plugin": [ROOT / "evaluator.py", plugin_cfg],
    }
    env = {**os.environ, "PYTHONPATH": f"{base / 'plugins'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, argv in commands.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err)
    return base, data, results


@pytest.mark.parametrize("case, expected", [
    ("malformed_json", "malformed JSON at line 3, column 15"),
    ("corrupt_image", "cannot decode image"),
    ("bad_plugin", "evaluator 'cli_badplugin.ev'"),
])
def test_cli_exit_code_2_and_no_traceback(cli_results, case, expected):
    base, data, results = cli_results
    code, out, err = results[case]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], err[-2000:]
    if case == "corrupt_image":
        assert str(data / "0001_") in errors[0]
        run = RunDir(base / "runs" / "c")
        assert run.read_state().state == "failed" and expected in run.read_state().message
        assert "Traceback" not in run.log.read_text()



def test_synthetic_tracking_data_is_refused_for_reid(tmp_path):
    cfg = config(tmp_path, tmp_path / "data", synthetic_data={"type": "got10k", "seed": 0})
    refused(train_args(cfg), "synthetic_data.type: 'got10k' makes tracking data", "'market' or 'classes'")
    assert not (tmp_path / "data").exists()
