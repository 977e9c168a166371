"""What the tracking speed benchmarks share: per-phase timers wrapped around the calls they measure, a proxy that
swaps some of an object's methods for timed ones without editing the object's class, the synthetic GOT-10k sequence
they track, and the warning that the machine's load makes a measurement say little."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path


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


def synthetic_sequence(work: Path, frames: int, width: int, height: int):
    """(decoded frames, ground-truth boxes) of one synthetic GOT-10k val sequence of `frames` + 1 frames, written
    under `work`."""
    from data.sequences import open_sequences
    from data.synthetic import Got10kSpec, generate_got10k

    generate_got10k(work / "got10k_sequence", Got10kSpec(num_train_seqs=1, num_val_seqs=1, min_frames=frames + 1,
                                                         max_frames=frames + 1, img_w=width, img_h=height), workers=1)
    sequences = open_sequences(work / "got10k_sequence", "val")
    sequence = sequences.sequences[0]
    return [sequences.frame(sequence, i) for i in range(len(sequence))], sequence.boxes


def warn_about_load(threads: int, measures: str) -> tuple[float, float, float]:
    """Print a warning when the load average plus `threads` exceeds the CPUs (PyTorch's OpenMP pool then waits for
    cores: `measures`, e.g. "the eager figures", would measure the contention), or a note when the machine is busy;
    returns the load averages."""
    load = os.getloadavg()
    cpus = os.cpu_count() or 1
    if threads > 1 and load[0] + threads > cpus + 0.5:
        print(f"warning: load average {load[0]:.1f} + {threads} threads on {cpus} CPUs: threads will wait for cores "
              f"(PyTorch's OpenMP pool badly so); {measures} may measure the contention, not the code (try "
              f"--threads 1)", flush=True)
    elif load[0] > cpus - 0.5:
        print(f"note: load average {load[0]:.1f} on {cpus} CPUs: the machine is busy, absolute figures are slowed down "
              f"(the ratios less so: both sides of each repeat run under the same load)", flush=True)
    return load
