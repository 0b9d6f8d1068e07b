"""Training data: datasets from a spec or a folder (with their held-out parts), a step-indexed batch plan over the
ratio mixture, and workers that transform + collate. Everything depends only on (seed, step, rank), so a resumed
run draws exactly the batches an uninterrupted one would."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from qmn.batching import collate
from qmn.config import QMNConfig
from qmn.data.folder import load_dataset
from qmn.data.mixing import DataSpec, DatasetSpec, MixedDataset, RatioSampler, holdout_split, load_data_spec
from qmn.data.sample import Sample
from qmn.data.transforms import LSJ_SCALE_RANGE, NATIVE_SCALE_RANGE, TrainTransform


class Subset(Sequence[Sample]):
    """Part of a dataset by index list, keeping its task and vocabulary attributes."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.task = dataset.task
        self.vocabulary = list(dataset.vocabulary)
        self.image_ids = [dataset.image_ids[i] for i in self.indices]
        self.root = getattr(dataset, "root", None)
        self.thing_classes = getattr(dataset, "thing_classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        return self.dataset[self.indices[i]]


@dataclass
class TrainingData:
    spec: DataSpec
    train: list[Subset]  # per dataset, training part
    heldout: list[Subset]  # per dataset, held-out part (may be empty)


def resolve_data(data: str | Path, default_holdout: float = 0.0) -> TrainingData:
    """A data spec file (JSON / YAML) or a labeled folder (one dataset, `default_holdout` of it held out)."""
    path = Path(data)
    if path.is_dir():
        spec = DataSpec(datasets=(DatasetSpec(path=path.resolve(), name=path.name, holdout=default_holdout),))
    elif path.is_file():
        spec = load_data_spec(path)
    else:
        raise ValueError(f"--data {data}: no such folder or spec file")
    train, heldout = [], []
    for entry in spec.datasets:
        dataset = load_dataset(entry.path, task=entry.task)
        if len(dataset) == 0:
            raise ValueError(f"{entry.path}: no usable images")
        tr, ho = holdout_split(len(dataset), entry.holdout, seed=0)  # fixed split, independent of the run's seed
        train.append(Subset(dataset, tr))
        heldout.append(Subset(dataset, ho))
    return TrainingData(spec, train, heldout)


class StepBatchSampler(Sampler[list]):
    """Yields, for each step from `start_step`, this rank's share of the global batch as (step, slot, index) keys.

    The global stream is `RatioSampler.global_stream(epoch)` with one "epoch" = `steps_per_epoch` global batches, so
    the mixture ratios hold globally; rank r takes slots r, r + world, ... of each global batch.
    """

    def __init__(self, ratio_sampler: RatioSampler, batch_size: int, world_size: int, rank: int, start_step: int,
                 total_steps: int, steps_per_epoch: int) -> None:
        self.sampler, self.batch_size, self.world, self.rank = ratio_sampler, batch_size, world_size, rank
        self.start, self.total, self.steps_per_epoch = start_step, total_steps, steps_per_epoch

    def __iter__(self):
        global_batch = self.batch_size * self.world
        cached_epoch, stream = -1, None
        for step in range(self.start, self.total):
            epoch, pos = divmod(step, self.steps_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, stream = epoch, self.sampler.global_stream(epoch)
            chunk = stream[pos * global_batch:(pos + 1) * global_batch]
            yield [(step, slot, int(chunk[slot])) for slot in range(self.rank, global_batch, self.world)]

    def __len__(self) -> int:
        return max(0, self.total - self.start)


class TransformedMixture:
    """Map-style dataset over (step, slot, index) keys: loads the sample and applies the seeded train transform."""

    def __init__(self, mixture: MixedDataset, transform: TrainTransform, seed: int) -> None:
        self.mixture, self.transform, self.seed = mixture, transform, seed

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[int, Sample]:
        step, slot, index = key
        sample = self.mixture[index]
        return step, self.transform(sample, np.random.default_rng([self.seed, step, slot]))


class Collator:
    """Picklable collate_fn: samples -> `Batch`, with the prompt sampling seeded by (seed, step, rank)."""

    def __init__(self, cfg: QMNConfig, seed: int, rank: int) -> None:
        self.cfg, self.seed, self.rank = cfg, seed, rank

    def __call__(self, items: list[tuple[int, Sample]]):
        step = items[0][0]
        return step, collate([s for _, s in items], self.cfg, np.random.default_rng([self.seed, step, self.rank, 7]))


def make_loader(data: TrainingData, cfg: QMNConfig, batch_size: int, seed: int, rank: int, world: int,
                start_step: int, total_steps: int, workers: int) -> DataLoader:
    mixture = MixedDataset(data.train, [d.name for d in data.spec.datasets])
    steps_per_epoch = max(1, len(mixture) // (batch_size * world))
    ratio = RatioSampler(mixture.sizes, data.spec.ratios, num_samples=steps_per_epoch * batch_size * world, seed=seed,
                         weighting=data.spec.weighting)
    sampler = StepBatchSampler(ratio, batch_size, world, rank, start_step, total_steps, steps_per_epoch)
    scales = NATIVE_SCALE_RANGE if cfg.native_max_side else LSJ_SCALE_RANGE
    transform = TrainTransform(cfg.image_size, scale_range=scales, max_side=cfg.native_max_side)
    dataset = TransformedMixture(mixture, transform, seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=Collator(cfg, seed, rank), num_workers=workers,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())
