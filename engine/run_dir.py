"""A run directory and its small state files.

``<working_dir>/<name>/`` holds ``params.json`` (resolved), ``train_log``, ``pid``, ``run_state.json`` (state,
epoch, best metric; rewritten atomically), ``latest.pth``, ``epoch_NNN.pth``, ``model_best.pth``,
``eval_results.jsonl`` and the TensorBoard event files. ``stop_train`` asks a run to stop by creating ``STOP``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

from engine.errors import UserError

STATES = ("starting", "running", "finished", "failed", "stopped")


@dataclass
class RunState:
    state: str = "starting"
    pid: Optional[int] = None
    epoch: int = 0
    epochs: int = 0
    global_step: int = 0
    best_metric: Optional[str] = None
    best_value: Optional[float] = None
    message: str = ""
    updated: float = field(default_factory=time.time)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    params = property(lambda self: self.path / "params.json")
    log = property(lambda self: self.path / "train_log")
    pid_file = property(lambda self: self.path / "pid")
    state_file = property(lambda self: self.path / "run_state.json")
    stop_file = property(lambda self: self.path / "STOP")
    latest = property(lambda self: self.path / "latest.pth")
    best = property(lambda self: self.path / "model_best.pth")
    eval_results = property(lambda self: self.path / "eval_results.jsonl")

    def epoch_checkpoint(self, epoch: int) -> Path:
        """The snapshot taken at the end of `epoch` (1-based: epoch_001.pth is after the first epoch)."""
        return self.path / f"epoch_{epoch:03d}.pth"

    def read_state(self) -> Optional[RunState]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        known = {k: v for k, v in data.items() if k in RunState.__dataclass_fields__}
        return RunState(**known)

    def write_state(self, state: RunState) -> None:
        state.updated = time.time()
        write_text_atomic(self.state_file, json.dumps(asdict(state), indent=2))

    def update_state(self, **changes) -> RunState:
        state = self.read_state() or RunState()
        for key, value in changes.items():
            setattr(state, key, value)
        self.write_state(state)
        return state

    def read_eval_results(self) -> list[dict]:
        """The recorded evaluations, oldest first; a torn last line (kill -9 mid-write) is left out."""
        try:
            lines = self.eval_results.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as err:
            raise RunDirError(f"{self.eval_results}: cannot read ({err})") from None
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return [r for r in records if isinstance(r, dict)]

    def append_eval_result(self, record: dict) -> None:
        """Append one JSON line. A line left incomplete by a crash (kill -9 mid-write) is dropped first, so the file
        stays one JSON object per line."""
        try:
            with open(self.eval_results, "a+b") as handle:
                size = handle.seek(0, os.SEEK_END)
                start = max(0, size - 65536)
                handle.seek(start)
                tail = handle.read()
                if tail and not tail.endswith(b"\n"):  # a torn last line: keep everything up to its start
                    cut = tail.rfind(b"\n")
                    if cut >= 0 or start == 0:
                        handle.truncate(start + cut + 1)
                    else:  # a torn line longer than 64 KiB: not ours to judge; end it instead
                        handle.write(b"\n")
                handle.seek(0, os.SEEK_END)
                handle.write((json.dumps(record) + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise RunDirError(f"{self.eval_results}: cannot write ({err.strerror or err})") from None


class RunDirError(UserError):
    """A run-directory file that cannot be written (disk full, read-only file system); names the file."""


def temp_name(path: Path, pid: Optional[int] = None) -> Path:
    """The temporary file that an atomic write of `path` by process `pid` (default: this one) goes through."""
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def remove_stale_temps(path: Path) -> None:
    """Delete temporary files of atomic writes of `path` left by processes that died mid-write (kill -9, power loss);
    those of live processes (a concurrent writer) are left alone."""
    prefix = f".{path.name}.tmp-"
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for candidate in candidates:
        pid = candidate.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            try:
                candidate.unlink()
            except OSError:
                pass


def write_atomic(path: Path, write: Callable[[IO], Any], binary: bool = True) -> None:
    """Replace `path` with what ``write(handle)`` writes: into a temporary file beside it, fsynced, then renamed over
    it, so that a crash or a full disk at any moment leaves the old or the new content. Whatever goes wrong
    (an OSError, or an exception of `write`) propagates after the temporary file is removed."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    # A process killed mid-write (kill -9) leaves its temporary file behind; the next successful write removes it.
    remove_stale_temps(path)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (see :func:`write_atomic`); a failure is a RunDirError naming the file."""
    try:
        write_atomic(Path(path), lambda handle: handle.write(text), binary=False)
    except OSError as err:
        raise RunDirError(f"{path}: cannot write ({err.strerror or err}); the previous content, if any, is "
                          "intact") from None


def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0); it is not running.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def effective_state(state: RunState) -> str:
    """The state a person should see: a 'running' run whose process is gone has failed."""
    if state.state in ("starting", "running") and not pid_alive(state.pid):
        return "failed"
    return state.state
