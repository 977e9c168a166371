"""Shared fixtures: a tiny synthetic Market-1501 dataset and tiny, fast training params."""

import copy
import json
import logging
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from data.synthetic import MarketSpec, generate_market

TINY_SPEC = MarketSpec(num_train_ids=8, num_test_ids=6, train_images_per_id=6, max_cams_per_id=3, min_gallery_per_id=3,
                       max_gallery_per_id=5, num_distractors=4, num_junk=2, img_h=64, img_w=32, seed=3)


@pytest.fixture(scope="session")
def tiny_market(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "market"
    generate_market(root, TINY_SPEC, workers=1)
    return root


@pytest.fixture(scope="session")
def small_data(tiny_market, tmp_path_factory) -> Path:
    """4 identities × 2 images (flat, Market-named): with P=2, K=2 an epoch is 2 steps of 4 images."""
    root = tmp_path_factory.mktemp("small") / "data"
    root.mkdir()
    for pid in ("0001", "0002", "0003", "0004"):
        for image in sorted((tiny_market / "bounding_box_train").glob(f"{pid}_*.jpg"))[:2]:
            shutil.copy(image, root / image.name)
    return root


def tiny_params(data_root: Path, working_dir: Path, **overrides) -> dict:
    """Params that train a resnet18 on 64×32 images for a couple of epochs in seconds."""
    params = {
        "working_dir": str(working_dir),
        "batches_dir": str(data_root),
        "img_h": 64, "img_w": 32, "epochs": 2,
        "batch_sampling_params": {"class_balanced": True, "P": 4, "K": 2},
        "model_params": {"model": "resnet18", "feature_dim": 32, "dropout": 0.0},
        "tri_loss_params": {"margin": 0.3},
        "lr": {"base_lr": 0.01, "fc_lr": 0.05, "decay_step": [], "warmup_epoch": 0},
        "num_preprocess_workers": 0,
        "log_every_steps": 1,
        "evaluation_params": {"type": "market_evaluate", "epoch": 1, "visualize_queries": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(params.get(key), dict):
            params[key] = {**params[key], **value}
        else:
            params[key] = value
    return copy.deepcopy(params)


def write_params(path: Path, params: dict) -> Path:
    path.write_text(json.dumps(params, indent=2))
    return path


@pytest.fixture
def restore_process_state():
    """train.main / evaluator.main run in this process install signal and logging handlers and may switch on
    deterministic algorithms; put everything back afterwards. Training here uses one thread: on a shared, loaded
    machine that is several times faster (no oversubscription)."""
    handlers, level = logging.root.handlers[:], logging.root.level
    signals = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for handler in logging.root.handlers:
        if handler not in handlers:
            handler.close()
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)
    for sig, handler in signals.items():
        signal.signal(sig, handler)
    torch.use_deterministic_algorithms(deterministic)


def wait_for(condition, timeout_s: float, what: str, interval: float = 0.3):
    """Poll `condition` until it returns something true, and return that; fail the test after `timeout_s` seconds (a
    hang must not hang the suite)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny networks: one intra-op thread avoids oversubscribing a shared machine (several times
    faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
