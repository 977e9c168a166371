"""Batch loading for training and evaluation.

Training batches are reproducible: the sampler fixes which images form step `s` of epoch `e`, and the augmentation of
the image at position `i` of that batch is drawn after seeding torch and `random` from (seed, e, s, i) inside a forked
RNG. So the tensors do not depend on the number of workers, on the order the workers finish, or on resuming at
`start_step` (skipped batches are never read or decoded).

A worker that meets an unreadable or corrupt image returns a marker instead of raising (no worker traceback); the main
process turns it into a DataError naming the file.

:class:`StepLoader` holds what every training loader shares (one DataLoader item per step, persistent workers that
ignore stop signals, resume at a step, error markers); :class:`TrainLoader` (images) and
:class:`data.pair_loader.PairLoader` (tracking pairs) only supply the dataset and each epoch's step items.
"""

from __future__ import annotations

import random
import signal
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from data.readers import ImageReader, decode_image
from data.records import DataError, ImageSet
from data.samplers import PKBatchSampler, ShuffledBatchSampler

_ERROR = "error"


def load_image(reader: ImageReader, key: str) -> Image.Image:
    """The decoded RGB image stored under `key`. Every failure is a DataError naming the file, an unexpected reader
    failure too, so a worker can hand it back as an error marker (``{_ERROR: message}``) instead of dying with a
    traceback."""
    where = reader.describe(key)
    try:
        data = reader.read(key)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{where}: cannot read image ({type(err).__name__}: {err})") from None
    return decode_image(data, where)


def sample_seed(seed: int, epoch: int, step: int, position: int) -> int:
    """The 63-bit seed of one sample's augmentation: a hash of (seed, epoch, step, position)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(step), int(position)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class _BatchDataset(Dataset):
    """Map-style dataset whose items are whole batches: item = (epoch, step, indices); epoch is None for evaluation
    (no seeding, the transform is deterministic). Picklable: holds only plain data, the reader (LMDB opens lazily per
    process) and the transform."""

    def __init__(self, image_set: ImageSet, transform, seed: Optional[int]) -> None:
        self.keys = [r.key for r in image_set.records]
        self.labels = torch.tensor([r.label for r in image_set.records], dtype=torch.long)
        self.camids = torch.tensor([r.camid for r in image_set.records], dtype=torch.long)
        self.reader = image_set.reader
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, item: tuple[Optional[int], int, Sequence[int]]) -> dict[str, Any]:
        epoch, step, indices = item
        images = []
        for position, index in enumerate(indices):
            try:
                image = load_image(self.reader, self.keys[index])
            except DataError as err:
                return {_ERROR: str(err)}
            if epoch is None:
                images.append(self.transform(image))
                continue
            seed = sample_seed(self.seed, epoch, step, position)
            py_state = random.getstate()
            try:
                with torch.random.fork_rng(devices=[]):
                    # Only the CPU generator: torch.manual_seed would also reseed (and leak into) the CUDA
                    # generators, and costs milliseconds per call on CUDA builds.
                    torch.default_generator.manual_seed(seed)
                    random.seed(seed)
                    images.append(self.transform(image))
            finally:
                random.setstate(py_state)
        index_tensor = torch.as_tensor(list(indices), dtype=torch.long)
        return {"images": torch.stack(images), "labels": self.labels[index_tensor],
                "camids": self.camids[index_tensor], "indices": index_tensor}


class _BatchList:
    """The sampler handed to DataLoader: the current epoch's batch items, replaced before each epoch (a persistent
    DataLoader re-iterates its sampler at every epoch)."""

    def __init__(self) -> None:
        self.items: list = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _identity(batch):
    return batch


def _checked(batches: Iterator[dict], on_error=None) -> Iterator[dict]:
    """Yield the batches; on a worker's error marker, drop the DataLoader iterator first (so its workers stop now,
    not whenever the traceback that would reference it is collected), then raise the DataError in this process."""
    for batch in batches:
        if _ERROR in batch:
            message = batch[_ERROR]
            break
        yield batch
    else:
        return
    del batches, batch
    if on_error is not None:
        on_error()
    raise DataError(message)


def ignore_stop_signals(worker_id: int) -> None:
    """In each loader worker: ignore SIGTERM and SIGINT. Supervisors (`timeout`, systemd, job schedulers, Ctrl-C in a
    terminal) signal the whole process group; the main process turns the signal into a graceful stop and then ends
    its workers itself, which it cannot do if they died first. A worker still exits if the main process dies
    (DataLoader's watchdog) or on SIGKILL."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StepLoader:
    """Reproducible training batches through a persistent DataLoader whose items are whole steps: the dataset turns
    one step item into that step's batch dict (or an error marker, see ``_checked``). ``epoch(e, start_step)`` hands
    the DataLoader only the steps from `start_step` on, so skipped steps are never read or decoded.

    A subclass passes its dataset and defines ``steps_per_epoch`` and ``_step_items(epoch)``: the items of every step
    of the epoch, in step order (their randomness must be a pure function of the seed, epoch, step and position)."""

    def __init__(self, dataset: Dataset, num_workers: int, seed: int) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be ≥ 0, found {num_workers}")
        self.num_workers = num_workers
        self.seed = int(seed)
        self._dataset = dataset
        self._items = _BatchList()
        self._loader: Optional[DataLoader] = None

    @property
    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def _step_items(self, epoch: int) -> Sequence:
        raise NotImplementedError

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            workers = self.num_workers
            self._loader = DataLoader(self._dataset, batch_size=None, sampler=self._items, collate_fn=_identity,
                                      num_workers=workers, persistent_workers=workers > 0,
                                      pin_memory=torch.cuda.is_available(),
                                      prefetch_factor=2 if workers > 0 else None, worker_init_fn=ignore_stop_signals,
                                      generator=torch.Generator().manual_seed(self.seed))
        return self._loader

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
        items = self._step_items(epoch)
        if not 0 <= start_step <= len(items):
            raise DataError(f"cannot resume epoch {epoch} at step {start_step}: an epoch of this training set has "
                            f"{len(items)} steps (did the training data or batch sampling change since the "
                            f"checkpoint?)")
        self._items.items = list(items[start_step:])
        if not self._items.items:
            return iter(())
        # Start the DataLoader iterator now, so it captures this epoch's items. A persistent DataLoader has one
        # iterator: only the latest epoch() result may be consumed.
        return _checked(iter(self._data_loader()), on_error=self.close)

    def close(self) -> None:
        """Stop the persistent worker processes (they also stop when the loader is garbage-collected)."""
        self._loader = None

    def __enter__(self) -> "StepLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TrainLoader(StepLoader):
    """Reproducible training batches: ``for batch in loader.epoch(e, start_step)`` yields dicts with ``images``
    (float B×3×H×W), ``labels``, ``camids`` and ``indices`` (LongTensors)."""

    def __init__(self, image_set: ImageSet, sampler: Union[PKBatchSampler, ShuffledBatchSampler], transform,
                 num_workers: int, seed: int) -> None:
        super().__init__(_BatchDataset(image_set, transform, int(seed)), num_workers, seed)
        self.image_set = image_set
        self.sampler = sampler

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def _step_items(self, epoch: int) -> list[tuple[int, int, tuple[int, ...]]]:
        return [(epoch, step, tuple(batch)) for step, batch in enumerate(self.sampler.batches(epoch))]


class _EvalLoader:
    def __init__(self, image_set: ImageSet, transform, batch_size: int, num_workers: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, found {batch_size}")
        n = len(image_set.records)
        self._items = [(None, start // batch_size, tuple(range(start, min(start + batch_size, n))))
                       for start in range(0, n, batch_size)]
        self._loader = DataLoader(_BatchDataset(image_set, transform, None), batch_size=None, sampler=self._items,
                                  collate_fn=_identity, num_workers=num_workers, worker_init_fn=ignore_stop_signals,
                                  pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict]:
        return _checked(iter(self._loader))


def build_eval_loader(image_set: ImageSet, transform, batch_size: int, num_workers: int) -> Iterable[dict]:
    """Batches of consecutive records in order (the last one may be smaller), with the same dict keys as training."""
    return _EvalLoader(image_set, transform, batch_size, num_workers)
