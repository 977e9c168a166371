"""The README's documented sequence (train → evaluator.py → deploy.export → evaluator.py on the .onnx) runs verbatim
in a fresh copy of the repository; only the budget in its params.json is made smaller."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- the documented sequence: tests/test_readme_sequence.py runs these lines verbatim -->"


def documented_sequence() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(re.escape(MARKER) + r"\s*```bash\n(.*?)```", readme, re.DOTALL)
    assert block, "the README lost its documented sequence"
    return [line for line in block.group(1).splitlines() if line.strip()]


def fresh_copy(destination: Path) -> Path:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split("\n"):
        if name and (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def test_documented_sequence_names_files_that_exist():
    commands = documented_sequence()
    assert [c.split()[1] for c in commands] == ["train.py", "evaluator.py", "-m", "evaluator.py"]
    for command in commands:
        for word in command.split():
            if word.endswith(".json"):
                assert (ROOT / word).is_file(), word


@pytest.mark.slow
def test_readme_sequence_runs_verbatim_in_a_fresh_copy(tmp_path):
    repo = fresh_copy(tmp_path / "repo")
    params = json.loads((repo / "params.json").read_text())
    params["epochs"] = 2
    params["lr"]["decay_step"] = []
    params["batch_sampling_params"]["P"] = 8
    params["evaluation_params"]["epoch"] = 1
    params["synthetic_data"]["options"] = {"num_train_ids": 16, "num_test_ids": 10, "train_images_per_id": 8,
                                           "num_distractors": 10, "num_junk": 5}
    (repo / "params.json").write_text(json.dumps(params, indent=2))

    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    for command in documented_sequence():
        result = subprocess.run(command, shell=True, cwd=repo, capture_output=True, text=True, timeout=900, env=env)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"

    run = repo / "runs" / "demo"
    records = [json.loads(line) for line in (run / "eval_results.jsonl").read_text().splitlines()]
    best = [r for r in records if r["is_best"]][-1]["metrics"]
    offline = json.loads((run / "eval_result.json").read_text())["metrics"]
    assert offline == best  # the recorded numbers, exactly
    onnx = json.loads((run / "eval_result_onnx.json").read_text())["metrics"]
    assert onnx["num_valid_queries"] == best["num_valid_queries"]
    assert abs(onnx["mAP"] - best["mAP"]) < 1e-3 and abs(onnx["rank1"] - best["rank1"]) <= 1 / best["num_valid_queries"]
