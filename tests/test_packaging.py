"""The installed package holds every project package, sub-packages included (trackers.<name> must be in a wheel)."""

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_directory_is_packaged():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = config["packages"]["find"]["include"]
    packaged = set(find_packages(ROOT, include=include))
    tops = {pattern.rstrip("*") for pattern in include}
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for top in tops for init in (ROOT / top).rglob("__init__.py")}
    assert on_disk and on_disk == packaged
    assert {"engine", "networks", "evaluate", "data", "deploy", "trackers"} <= packaged
