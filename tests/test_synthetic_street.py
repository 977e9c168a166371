"""The second Market rendering style (``MarketSpec(style="street")``, data/_render_street.py): same layout and file
names as the default style, its own deterministic images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import synthetic as syn
from data.synthetic import MarketSpec

NAME_RE = re.compile(syn.MARKET_NAME_RE)
TINY = MarketSpec(num_train_ids=4, num_test_ids=4, cameras=3, train_images_per_id=3, max_cams_per_id=3,
                  min_gallery_per_id=3, max_gallery_per_id=4, num_distractors=3, num_junk=2, img_h=64, img_w=32,
                  seed=5, style="street")


def tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("street") / "market"
    syn.generate_market(root, TINY, workers=1)
    return root


def test_street_has_the_market_layout_and_names(street):
    assert sorted(p.name for p in street.iterdir()) == ["bounding_box_test", "bounding_box_train", "query",
                                                        syn.MANIFEST_NAME]
    files = sorted(street.rglob("*.jpg"))
    assert files and all(NAME_RE.match(f.name) for f in files)
    for f in files[::3]:
        with Image.open(f) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (TINY.img_w, TINY.img_h))
            assert np.asarray(im).std() > 3
    assert json.loads((street / syn.MANIFEST_NAME).read_text())["spec"]["style"] == "street"


def test_street_is_deterministic_and_worker_independent(street, tmp_path):
    syn.generate_market(tmp_path / "again", TINY, workers=2)
    assert tree_bytes(tmp_path / "again") == tree_bytes(street)


def test_styles_share_the_file_plan_but_not_the_images(street, tmp_path):
    figures = tmp_path / "figures"
    syn.generate_market(figures, MarketSpec(**{**TINY.__dict__, "style": "figures"}), workers=1)
    street_files, figure_files = tree_bytes(street), tree_bytes(figures)
    names = sorted(k for k in street_files if k.endswith(".jpg"))
    assert names == sorted(k for k in figure_files if k.endswith(".jpg"))
    assert all(street_files[n] != figure_files[n] for n in names)


def test_style_is_validated_and_old_manifests_mean_figures(tmp_path):
    with pytest.raises(ValueError, match="style"):
        MarketSpec(style="cartoon")
    figures = MarketSpec(**{**TINY.__dict__, "style": "figures", "num_distractors": 0, "num_junk": 0})
    root = tmp_path / "old"
    syn.generate_market(root, figures, workers=1)
    manifest = json.loads((root / syn.MANIFEST_NAME).read_text())
    del manifest["spec"]["style"]  # as written before styles existed
    (root / syn.MANIFEST_NAME).write_text(json.dumps(manifest))
    assert syn.ensure_market(root, figures)["generated"] is False
    with pytest.raises(FileExistsError, match="different"):
        syn.ensure_market(root, MarketSpec(**{**figures.__dict__, "style": "street"}))


def test_cli_style_flag(tmp_path, capsys):
    out = tmp_path / "cli"
    assert syn.main(["market", "--out", str(out), "--style", "street", "--num-train-ids", "2", "--num-test-ids", "2",
                     "--cameras", "2", "--img-h", "32", "--img-w", "16", "--distractors", "1", "--junk", "1",
                     "--train-images-per-id", "2"]) == 0
    assert json.loads((out / syn.MANIFEST_NAME).read_text())["spec"]["style"] == "street"
    with pytest.raises(SystemExit) as exc:
        syn.main(["market", "--out", str(tmp_path / "x"), "--style", "cartoon"])
    assert exc.value.code == 2
