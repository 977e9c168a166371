"""Market-1501 protocol evaluation of a re-ID model (on the fly during training, or offline from evaluator.py).

Query and gallery come from ``evaluation_params.data_dir`` (a Market-1501 root with query/ and bounding_box_test/,
or a root with query/ and gallery/ holding one folder per identity; MSMT17 names are recognised). Metrics are those of
`evaluate.metrics.rank_metrics` (see its docstring for the exact protocol and AP definitions): rank1/5/10, mAP (plain
AP, as fast-reid/torchreid), mAP_trapezoid (official Market-1501 devkit, as the seed README), mINP, and the count of
valid/skipped queries. Optional metric sets: ``st_*`` after the seed's spectral top-k refinement, ``rr_*`` after
k-reciprocal re-ranking. The primary metric is rank1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Literal, Optional

import numpy as np
from pydantic import Field

from data.formats import REID_EVAL_LAYOUTS, check_eval_root, is_reid_eval_root, open_reid_eval
from data.readers import decode_image
from engine.errors import UserError
from engine.sections import Fraction, NonNegInt, PositiveInt, Section
from evaluate.metrics import pairwise_distances, rank_metrics, rank_metrics_from_features, topk_filtered
from evaluate.postprocess import spectral_refine
from evaluate.rerank import k_reciprocal_rerank
from evaluate.visualize import cmc_curve_image, ranked_grid

if TYPE_CHECKING:  # the params of the task these evaluators serve; only a type here
    from networks.reid_params import ReidParams

log = logging.getLogger(__name__)
PRIMARY = "rank1"


class MarketOptions(Section):
    """market_evaluate's options: the same keys on the fly (``evaluation_params``) and offline
    (``eval_params.json``)."""

    distance: Literal["cosine", "euclidean"] = Field("cosine", description="Re-ID distance: cosine on L2-normalised "
                                                     "features, or squared Euclidean on raw features.")
    flip_test: bool = Field(False, description="Average the features of each image and its mirror.")
    spectral_transform: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Temperature of the test-time spectral top-k refinement (seed post-processing); 0 = off. "
        "Reported as a separate metric set with the prefix `st_`.")
    spectral_top_k: PositiveInt = Field(50, description="Gallery items refined by the spectral post-processing.")
    rerank: bool = Field(False, description="Also report k-reciprocal re-ranked metrics (prefix `rr_`).")
    rerank_k1: PositiveInt = Field(20, description="k-reciprocal re-ranking k1.")
    rerank_k2: PositiveInt = Field(6, description="k-reciprocal re-ranking k2 (query expansion).")
    rerank_lambda: Fraction = Field(0.3, description="Weight of the original distance in re-ranking.")
    max_rank: PositiveInt = Field(50, description="Length of the reported CMC curve.")
    visualize_queries: NonNegInt = Field(4, description="Queries drawn with their top-10 in TensorBoard; 0 = none.")


OPTIONS = MarketOptions


def eval_data_dir(params: ReidParams) -> Path:
    data_dir = params.evaluation_params.data_dir or params.batches_dir
    return Path(data_dir)


def eval_data_key(params: ReidParams) -> str:
    """The params key that names the evaluation data, for messages."""
    if params.evaluation_params.data_dir:
        return "evaluation_params.data_dir"
    return "evaluation_params.data_dir (not set, so batches_dir)"


def check_inputs(params: ReidParams) -> None:
    """Before training: the evaluation data is a re-ID evaluation root (data that the run generates itself, the
    synthetic demo set, is checked when it exists)."""
    if params.evaluation_params.data_dir is None and params.synthetic_data is not None:
        return
    check_eval_root(eval_data_dir(params), eval_data_key(params), REID_EVAL_LAYOUTS, is_reid_eval_root)


def compute_features(params: ReidParams, model: Callable, device, query, gallery,
                     feature_path: Optional[str] = None, model_file: Optional[str] = None):
    # Imported here so that importing this module (start_train checks its inputs) does not load torch.
    from data.loader import build_eval_loader
    from data.transforms import build_eval_transform, network_input_size
    from evaluate.features import extract_features, fingerprint, load_feature_cache, save_feature_cache

    ev = params.evaluation_params
    input_size = network_input_size(params.img_h, params.img_w, params.data_augmentation)
    cache_key = None
    if feature_path:
        keys = [r.key for r in query.records] + ["|"] + [r.key for r in gallery.records]
        cache_key = fingerprint(model_file, keys, input_size, ev.flip_test)
        cached = load_feature_cache(feature_path, cache_key)
        if cached is not None:
            log.info("features loaded from cache %s", feature_path)
            return cached["query"], cached["gallery"]
    transform = build_eval_transform(params.img_h, params.img_w, params.data_augmentation)
    batch_size = ev.batch_size or params.batch_sampling_params.batch_size
    workers = params.num_preprocess_workers
    q = extract_features(model, build_eval_loader(query, transform, batch_size, workers), device, ev.flip_test)
    g = extract_features(model, build_eval_loader(gallery, transform, batch_size, workers), device, ev.flip_test)
    if cache_key is not None:
        save_feature_cache(feature_path, cache_key, query=q, gallery=g)
    return q, g


def run_eval(params: ReidParams, model: Callable, device, writer=None, global_step: int = 0,
             feature_path: Optional[str] = None, model_file: Optional[str] = None) -> tuple[dict[str, float], str]:
    ev = params.evaluation_params
    query, gallery = open_reid_eval(eval_data_dir(params))
    qf, gf = compute_features(params, model, device, query, gallery, feature_path, model_file)
    ids = {name: np.array([getattr(r, attr) for r in s.records], dtype=np.int64)
           for name, s, attr in (("q_pids", query, "pid"), ("g_pids", gallery, "pid"),
                                 ("q_camids", query, "camid"), ("g_camids", gallery, "camid"))}
    try:
        result = rank_metrics_from_features(qf, gf, metric=ev.distance, max_rank=ev.max_rank, **ids)
    except ValueError as err:  # NoValidQueryError included: a data problem, said plainly
        raise UserError(f"evaluation data {eval_data_dir(params)}: {err}") from None
    metrics = _flat(result)
    dist = None
    if ev.spectral_transform > 0 or ev.visualize_queries and writer is not None:
        dist = pairwise_distances(qf, gf, ev.distance)
    if ev.spectral_transform > 0:
        refined = spectral_refine(dist, qf, gf, ev.spectral_transform, ev.spectral_top_k)
        metrics.update({f"st_{k}": v for k, v in _flat(rank_metrics(refined, max_rank=ev.max_rank, **ids)).items()})
    if ev.rerank:
        reranked = k_reciprocal_rerank(qf, gf, ev.rerank_k1, ev.rerank_k2, ev.rerank_lambda)
        metrics.update({f"rr_{k}": v for k, v in _flat(rank_metrics(reranked, max_rank=ev.max_rank, **ids)).items()})
    if writer is not None:
        writer.add_image("eval/cmc_curve", cmc_curve_image(result["cmc"]), global_step, dataformats="HWC")
        if ev.visualize_queries:
            _log_ranked_examples(writer, global_step, dist, query, gallery, ids, ev.visualize_queries)
    return metrics, PRIMARY


def _flat(result: dict) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if k != "cmc"}


def _log_ranked_examples(writer, global_step, dist, query, gallery, ids, count: int, k: int = 10) -> None:
    """The first `count` queries (evenly spread over the query set) with their top-k after junk removal."""
    picks = np.linspace(0, len(query.records) - 1, num=min(count, len(query.records))).astype(int)
    rows = []
    for qi in picks:
        top = topk_filtered(dist[qi], ids["q_pids"][qi], ids["q_camids"][qi], ids["g_pids"], ids["g_camids"], k)
        q_img = decode_image(query.reader.read(query.records[qi].key), query.reader.describe(query.records[qi].key))
        g_imgs = [decode_image(gallery.reader.read(gallery.records[j].key),
                               gallery.reader.describe(gallery.records[j].key)) for j in top]
        matches = [ids["g_pids"][j] == ids["q_pids"][qi] for j in top]
        rows.append(ranked_grid(q_img, g_imgs, matches))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    writer.add_image("eval/ranked_results", grid, global_step, dataformats="HWC")
