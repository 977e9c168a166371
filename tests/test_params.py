"""params.json parsing: defaults, seed spellings, and one clear message for every class of error."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.params import EvalParams, ParamsError, json_schema, load_params, markdown_table, params_to_json, parse_params
from networks.reid_params import ReidParams

ROOT = Path(__file__).resolve().parent.parent
MIN = {"batches_dir": "data_here"}


def error_of(data) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(data, "p.json")
    return str(info.value)


def test_defaults_fill_every_key():
    p = parse_params(MIN)
    assert p.task == "reid" and p.epochs == 60 and p.model_params.model == "resnet50"
    assert p.batch_sampling_params.P == 16 and p.lr.decay_step == [40, 80]
    assert p.evaluation_params.type is None


def test_root_params_json_is_valid():
    p = load_params(ROOT / "params.json")
    assert p.synthetic_data is not None and p.evaluation_params.type == "market_evaluate"


def test_seed_spellings_are_accepted():
    p = parse_params({**MIN, "epoch": 7, "tri_loss_margin": "soft_margin", "tri_loss_lambda_cls": 0.5,
                      "model_params": {"model": "resnet_18", "feature_gobal_dim": 0},
                      "data_augmentation": {"colour_jitering": True}, "evaluation_params": {"type": "None"}})
    assert p.epochs == 7 and p.model_params.model == "resnet18"
    assert p.tri_loss_params.margin == "soft_margin" and p.tri_loss_params.lambda_cls == 0.5
    assert p.data_augmentation.colour_jittering is True
    assert p.evaluation_params.type is None


def test_resolved_params_round_trip():
    p = parse_params({**MIN, "epoch": 3, "tri_loss_margin": 0.3})
    again = parse_params(json.loads(params_to_json(p)))
    assert again == p.model_copy(update={"tri_loss_margin": None})
    assert again.tri_loss_params.margin == 0.3


@pytest.mark.parametrize("data, expected", [
    ({**MIN, "model_params": {"feture_dim": 3}}, "unknown key 'model_params.feture_dim'; did you mean "
                                                "'model_params.feature_dim'?"),
    ({**MIN, "evaluatoin_params": {}}, "unknown key 'evaluatoin_params'; did you mean 'evaluation_params'?"),
    ({}, "missing required key 'batches_dir'"),
    ({**MIN, "img_h": "64"}, "key 'img_h': input should be a valid integer, found \"64\" (str)"),
    ({**MIN, "img_h": 0}, "key 'img_h': input should be greater than 0, found 0 (int)"),
    ({**MIN, "lr": {"base_lr": -1}}, "key 'lr.base_lr': input should be greater than 0"),
    ({**MIN, "fine_tune": 1}, "key 'fine_tune': input should be a valid boolean, found 1 (int)"),
    ({**MIN, "model_params": {"model": "vgg16"}}, "key 'model_params.model': expected one of resnet18"),
    ({**MIN, "model_params": {"last_conv_stride": 3}}, "key 'model_params.last_conv_stride': input should be 1 or 2"),
    ({**MIN, "lr": {"decay_step": [5, 3]}}, "decay_step must be strictly increasing; found [5, 3]"),
    ({**MIN, "lr": {"decay_step": [5, "a"]}}, "key 'lr.decay_step.1': input should be a valid integer"),
    ({**MIN, "tri_loss_params": {"margin": "soft"}}, "key 'tri_loss_params.margin':"),
    ({**MIN, "epoch": 3, "epochs": 4}, "give either 'epochs' or its seed spelling 'epoch', not both"),
    ({**MIN, "tri_loss_margin": 0.3, "tri_loss_params": {"margin": 0.2}}, "contradicts tri_loss_params.margin"),
    ({**MIN, "tri_loss_margin": 0.3, "batch_sampling_params": {"class_balanced": False}},
     "the triplet loss needs identity-balanced batches"),
    ({**MIN, "tri_loss_margin": 0.3, "batch_sampling_params": {"K": 1}}, "at least 2 images per identity"),
    ({**MIN, "tri_loss_params": {"lambda_cls": 0}}, "nothing would be trained"),
    ({**MIN, "data_augmentation": {"crop_h": 3}}, "crop_h and crop_w must both be 0"),
    ({**MIN, "data_augmentation": {"crop_h": 300, "crop_w": 10}}, "is larger than the padded image"),
    ({**MIN, "img_h": 256, "img_w": 128, "data_augmentation": {"crop_h": 64, "crop_w": 32}},
     "crop 64×32 is a small piece of the 256×128 image"),
    ({**MIN, "gan_params": {"input_dim": 100}}, "key 'gan_params.input_dim': input should be 0"),
    ({**MIN, "fine_tune": True}, "fine_tune freezes the backbone"),
    ({**MIN, "parallels": "0"}, "key 'parallels': input should be a valid list"),
    ({**MIN, "synthetic_data": {"type": "faces"}}, "key 'synthetic_data.type': input should be 'market', 'classes', 'got10k', 'alov', 'imagenet_det', 'davis' or 'vot'"),
    ([1, 2], "expected a JSON object at the top level, found list"),
])
def test_each_error_is_one_clear_line(data, expected):
    message = error_of(data)
    assert expected in message
    assert message.startswith("p.json: ")
    assert "Traceback" not in message and "pydantic" not in message


def test_every_error_is_reported_at_once():
    message = error_of({**MIN, "img_h": -1, "img_w": "x", "bogus": 1})
    assert len(message.splitlines()) == 3


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{\n  "batches_dir": "x",\n  "epochs": 3,,\n}')
    with pytest.raises(ParamsError, match=r"p\.json: malformed JSON at line 3, column 15"):
        load_params(path)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.json")


def test_crop_covers_most_of_the_image():
    # pad + crop to the image size, and resize-larger-then-crop (torchreid's Random2DTranslation, 1/1.125) are fine
    assert parse_params({**MIN, "img_h": 256, "img_w": 128, "data_augmentation": {"padding_h": 10, "padding_w": 10,
                                                                                "crop_h": 256, "crop_w": 128}})
    assert parse_params({**MIN, "img_h": 288, "img_w": 144, "data_augmentation": {"crop_h": 256, "crop_w": 128}})
    message = error_of({**MIN, "img_h": 256, "img_w": 128, "data_augmentation": {"crop_h": 256, "crop_w": 64}})
    assert "at least 80% of img_h and of img_w" in message and "crop_h/crop_w to 256/128" in message


def test_every_params_file_in_the_repository_validates_against_the_printed_schema():
    """With a real JSON Schema validator: the schemas accept every file the loaders accept, older spellings too."""
    import jsonschema

    train_schema = json.loads(subprocess.run([sys.executable, str(ROOT / "train.py"), "--print-schema"],
                                             capture_output=True, text=True, check=True).stdout)
    eval_schema = json.loads(subprocess.run([sys.executable, str(ROOT / "evaluator.py"), "--print-schema"],
                                            capture_output=True, text=True, check=True).stdout)
    tracked = subprocess.run(["git", "ls-files", "*.json"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    files = sorted({ROOT / name for name in tracked} | {ROOT / "params.json", ROOT / "eval_params.json"})
    for path in files:
        data = json.loads(path.read_text())
        is_eval = "model_path" in data
        jsonschema.validate(data, eval_schema if is_eval else train_schema)
        if not is_eval:
            load_params(path)
    seed_spellings = {**MIN, "epoch": 7, "tri_loss_margin": 0.3, "tri_loss_lambda_cls": 0.5,
                      "model_params": {"model": "resnet_50", "feature_gobal_dim": 0},
                      "data_augmentation": {"colour_jitering": True, "colour_jiterring": True}}
    jsonschema.validate(seed_spellings, train_schema)
    with pytest.raises(jsonschema.ValidationError, match="'colour_jitterring' was unexpected"):
        jsonschema.validate({**MIN, "data_augmentation": {"colour_jitterring": True}}, train_schema)


def test_schema_and_markdown_come_from_the_same_fields():
    schema = json_schema([ReidParams])
    assert set(schema["properties"]) == set(ReidParams.model_fields) | {"epoch"}  # and the seed spelling of epochs
    assert schema["additionalProperties"] is False
    table = markdown_table(ReidParams)
    for name in ("model_params.feature_dim", "evaluation_params.best_metric", "lr.warmup_epoch"):
        assert f"`{name}`" in table


def test_params_docs_are_up_to_date():
    doc = (ROOT / "docs" / "params.md").read_text()
    assert markdown_table(ReidParams) in doc
    assert markdown_table(EvalParams) in doc


def test_print_schema_cli():
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--print-schema"], capture_output=True, text=True,
                         check=True).stdout
    schemas = json.loads(out)["oneOf"]  # one per task's params class; `task` tells them apart
    assert all(schema["properties"]["batches_dir"]["type"] == "string" for schema in schemas)
    assert {"task" in schema.get("required", []) for schema in schemas} == {False, True}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=False, width=32) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=8)
KEYS = list(ReidParams.model_fields) + ["epoch", "feature_gobal_dim", "P", "K", "margin", "type"]


@st.composite
def params_like(draw):
    data = {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=6)):
        data[key] = draw(JSON_VALUES | st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=3))
    if draw(st.booleans()):
        data["batches_dir"] = "x"
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params_like())
def test_arbitrary_json_loads_or_is_refused_cleanly(data):
    """Any JSON value either loads into a valid configuration or raises ParamsError — never another exception."""
    try:
        p = parse_params(data, "p.json")
    except ParamsError as err:
        assert str(err).startswith("p.json: ")
        return
    assert isinstance(p, ReidParams)
    assert parse_params(json.loads(params_to_json(p))) is not None


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_arbitrary_top_level_json(data):
    try:
        parse_params(data, "p.json")
    except ParamsError:
        pass
