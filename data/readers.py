"""Where image bytes come from: a directory tree or an LMDB pack, behind one small interface."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

from PIL import Image

from data.records import DataError

MANIFEST_KEY = b"__manifest__.json"
"""Key of the pack manifest inside an LMDB pack (never an image key: image keys end with an image extension)."""


@runtime_checkable
class ImageReader(Protocol):
    def read(self, key: str) -> bytes:
        """The encoded bytes of the image stored under `key`; DataError if it cannot be read."""

    def describe(self, key: str) -> str:
        """Where `key` lives, for messages: a full path, or 'pack.lmdb:key'."""


class FolderReader:
    """Reads `root/key` from the file system."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def read(self, key: str) -> bytes:
        path = self.root / key
        try:
            return path.read_bytes()
        except OSError as err:
            raise DataError(f"{path}: cannot read image ({err.strerror or err})") from None

    def describe(self, key: str) -> str:
        return str(self.root / key)

    def size(self, key: str) -> int:
        return (self.root / key).stat().st_size

    def __repr__(self) -> str:
        return f"FolderReader({str(self.root)!r})"


# One environment per (pack file, process). py-lmdb refuses to open the same environment twice in a process, and an
# environment must not be used across fork(): a process that finds environments inherited from its parent closes its
# copies (which leaves the parent's untouched) and opens its own.
_envs: dict[tuple, object] = {}
_envs_pid = os.getpid()


def _shared_env(path: Path):
    global _envs_pid
    import lmdb

    if _envs_pid != os.getpid():
        inherited = list(_envs.values())
        _envs.clear()
        _envs_pid = os.getpid()
        for env in inherited:
            try:
                env.close()
            except Exception:  # pragma: no cover - best effort on a copy we never use
                pass
    subdir = path.is_dir()
    data_file = path / "data.mdb" if subdir else path
    expected = "expected an LMDB pack made by `python -m data.pack SRC DST`"
    try:
        st = data_file.stat()
    except OSError as err:
        raise DataError(f"{path}: cannot open LMDB pack ({err.strerror or err}); {expected}") from None
    if st.st_size == 0:
        raise DataError(f"{data_file}: empty file (0 bytes), not an LMDB database; {expected}")
    key = (str(path.resolve()), st.st_dev, st.st_ino)
    env = _envs.get(key)
    if env is None:
        try:
            env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, subdir=subdir,
                            max_readers=512)
        except lmdb.Error as err:
            raise DataError(f"{data_file}: cannot open as an LMDB database ({str(err).removeprefix(str(path) + ': ')}); "
                            f"{expected}") from None
        _envs[key] = env
    return env


class LmdbReader:
    """Reads images from an LMDB pack written by :mod:`data.pack`.

    The environment is opened lazily, read-only and without the lock file, once per process and shared by the readers
    of that process: LMDB environments must not cross a fork, so a copy of this object in a forked or spawned worker
    opens the pack again there.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._env = None
        self._pid: Optional[int] = None

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._env = None
        self._pid = None

    def _environment(self):
        if self._env is None or self._pid != os.getpid():
            self._env = _shared_env(self.path)
            self._pid = os.getpid()
        return self._env

    def get(self, key: bytes) -> Optional[bytes]:
        import lmdb

        try:
            with self._environment().begin(write=False, buffers=False) as txn:
                return txn.get(key)
        except lmdb.Error as err:
            raise DataError(f"{self.path}: cannot read LMDB pack ({err})") from None

    def read(self, key: str) -> bytes:
        data = self.get(key.encode("utf-8"))
        if data is None:
            raise DataError(f"{self.describe(key)}: no such image in the pack")
        return data

    def describe(self, key: str) -> str:
        return f"{self.path}:{key}"

    def __repr__(self) -> str:
        return f"LmdbReader({str(self.path)!r})"


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode encoded image bytes into an RGB PIL image; DataError naming `where` if they are not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except Image.UnidentifiedImageError:
        if not data:
            raise DataError(f"{where}: cannot decode image (empty file)") from None
        raise DataError(f"{where}: cannot decode image (not a recognised image format; first bytes "
                        f"{data[:8]!r})") from None
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        reason = str(err) or type(err).__name__
        raise DataError(f"{where}: cannot decode image ({reason})") from None
