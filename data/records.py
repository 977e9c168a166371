"""The in-memory description of a dataset: one record per image plus the reader that fetches its bytes.

Every layout on disk (Market-1501 root, flat directory, one folder per identity/class, LMDB pack) is turned into the
same :class:`ImageSet`, so samplers, the loader and the packer never look at the layout again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from data.readers import ImageReader


class DataError(UserError):
    """Unusable training/evaluation data. The message names the file or directory, what was expected and what was
    found; it is printed without a traceback."""


@dataclass(frozen=True)
class ImageRecord:
    key: str
    """Path relative to the dataset root, '/'-separated; also the key of the image in an LMDB pack."""
    pid: int
    """Identity as named on disk (-1 junk, 0 distractor in Market naming); the class index for class folders."""
    camid: int
    """Camera parsed from the file name (Market ``c3`` → 3); -1 when the layout has none."""
    label: int
    """Contiguous training label in [0, num_classes); -1 in re-ID evaluation sets."""


@dataclass(frozen=True)
class ImageSet:
    records: tuple[ImageRecord, ...]
    class_names: tuple[str, ...]
    reader: "ImageReader"
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]
