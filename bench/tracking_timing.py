"""What the tracking speed benchmarks share: per-phase timers wrapped around the calls they measure, and a proxy
that swaps some of an object's methods for timed ones without editing the object's class."""

from __future__ import annotations

import time
from collections import defaultdict


class Clock:
    """Per-phase seconds of the current run (counted only while ``on``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.on = False

    def timed(self, phase: str, fn):
        def wrapper(*args, **kwargs):
            if not self.on:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start
        return wrapper


class Proxy:
    """Forwards every attribute to `target`, except the ones set on the proxy."""

    def __init__(self, target, **overrides) -> None:
        self.__dict__.update(overrides)
        self._target = target

    def __getattr__(self, name):
        return getattr(self._target, name)
