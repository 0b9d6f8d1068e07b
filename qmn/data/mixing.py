"""Multi-dataset training mixtures (paper Table 11): a data spec, a concatenated dataset, a ratio sampler.

The paper trains one model on many datasets of different sizes and tasks, each drawn with its own
ratio. `RatioSampler` turns ratios into one seeded index stream per epoch; under DDP every rank takes
a strided slice of that same global stream, so the slices are disjoint, their union is the stream, and
the mixture proportions hold globally and on each rank (a strided slice of i.i.d. draws is i.i.d.).

Two readings of "ratio" are offered (`weighting`):
  - "probability" (default): dataset i is drawn with probability ratio_i / sum(ratio);
  - "upsample": ratio_i is an upsampling factor, as Table 11 names it: probability proportional to
    ratio_i * len(dataset_i), i.e. dataset i is seen ratio_i times per pass relative to the others.
"""
from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import yaml
from torch.utils.data import Sampler

from qmn.data.sample import TASKS, Sample

WEIGHTINGS = ("probability", "upsample")
SPEC_KEYS = ("datasets", "weighting")
DATASET_KEYS = ("path", "task", "ratio", "name", "holdout")


# ---- data spec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of a data spec; `path` is absolute (relative paths are read from the spec's folder)."""

    path: Path
    name: str
    ratio: float = 1.0
    task: Optional[str] = None  # None: the dataset's own task
    holdout: float = 0.0  # fraction of its images kept out of training for before/after metrics


@dataclass(frozen=True)
class DataSpec:
    datasets: tuple[DatasetSpec, ...]
    weighting: str = "probability"

    @property
    def ratios(self) -> list[float]:
        return [d.ratio for d in self.datasets]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_dataset(entry, index: int, spec_path: Path) -> DatasetSpec:
    where = f"data spec {spec_path}: datasets[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a mapping with a 'path', got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(DATASET_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(DATASET_KEYS)}")
    raw_path = entry.get("path")
    if not isinstance(raw_path, str) or not raw_path:
        raise ValueError(f"{where}.path must be a non-empty string, got {raw_path!r}")
    path = (spec_path.parent / raw_path).resolve()
    if not path.exists():
        raise ValueError(f"{where}.path {raw_path!r} does not exist (resolved to {path})")
    ratio = entry.get("ratio", 1.0)
    if not _is_number(ratio) or ratio < 0:
        raise ValueError(f"{where}.ratio must be a number >= 0, got {ratio!r}")
    task = entry.get("task")
    if task is not None and task not in TASKS:
        raise ValueError(f"{where}.task must be one of {', '.join(TASKS)}, got {task!r}")
    holdout = entry.get("holdout", 0.0)
    if not _is_number(holdout) or not 0 <= holdout < 1:
        raise ValueError(f"{where}.holdout must be a fraction in [0, 1), got {holdout!r}")
    name = entry.get("name", path.name)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name must be a non-empty string, got {name!r}")
    return DatasetSpec(path=path, name=name, ratio=float(ratio), task=task, holdout=float(holdout))


def load_data_spec(path: str | Path) -> DataSpec:
    """Read a JSON or YAML data spec: {"datasets": [{"path", "task", "ratio", "name", "holdout"}], "weighting"}.

    Raises ValueError (one line, naming the file and the field) for anything malformed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"data spec {path}: cannot read it ({error.strerror or error})") from error
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        message = " ".join(str(error).split())
        raise ValueError(f"data spec {path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                         f"{message}") from error
    if not isinstance(raw, dict):
        raise ValueError(f"data spec {path}: expected a mapping with a 'datasets' list at the top")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"data spec {path}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(SPEC_KEYS)}")
    entries = raw.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"data spec {path}: 'datasets' must be a non-empty list")
    weighting = raw.get("weighting", "probability")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"data spec {path}: 'weighting' must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    datasets = tuple(_parse_dataset(entry, i, path) for i, entry in enumerate(entries))
    names = [d.name for d in datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"data spec {path}: dataset name(s) used twice: {', '.join(duplicates)} (set 'name')")
    if sum(d.ratio for d in datasets) <= 0:
        raise ValueError(f"data spec {path}: at least one dataset needs a ratio > 0")
    return DataSpec(datasets=datasets, weighting=weighting)


def holdout_split(num_items: int, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, holdout) index lists, seeded; a fraction > 0 holds out at least one item and keeps one."""
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    count = round(num_items * fraction)
    if fraction > 0 and num_items >= 2:
        count = min(max(count, 1), num_items - 1)
    order = np.random.default_rng(seed).permutation(num_items)
    return sorted(order[count:].tolist()), sorted(order[:count].tolist())


# ---- dataset and sampler ------------------------------------------------------------------------


class MixedDataset(Sequence[Sample]):
    """Several datasets as one index space: global index = offset of its dataset + local index."""

    def __init__(self, datasets: Sequence[Sequence[Sample]], names: Optional[Sequence[str]] = None) -> None:
        if not datasets:
            raise ValueError("MixedDataset needs at least one dataset")
        self.datasets = list(datasets)
        self.names = list(names) if names is not None else [f"dataset{i}" for i in range(len(datasets))]
        if len(self.names) != len(self.datasets):
            raise ValueError(f"MixedDataset got {len(self.datasets)} datasets but {len(self.names)} names")
        self.sizes = [len(d) for d in self.datasets]
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(dataset index, local index) of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a MixedDataset of {len(self)} samples")
        which = bisect.bisect_right(self.offsets, index) - 1
        return which, index - self.offsets[which]

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        which, local = self.locate(int(index))
        return self.datasets[which][local]


def mixture_probabilities(sizes: Sequence[int], ratios: Sequence[float], weighting: str = "probability") -> np.ndarray:
    """Per-dataset draw probabilities (K,) from ratios; empty datasets get 0."""
    if len(sizes) != len(ratios):
        raise ValueError(f"got {len(sizes)} datasets but {len(ratios)} ratios")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    ratio = np.asarray(ratios, np.float64)
    if not np.all(np.isfinite(ratio)) or np.any(ratio < 0):
        raise ValueError(f"ratios must be finite numbers >= 0, got {list(ratios)}")
    size = np.asarray(sizes, np.float64)
    weight = ratio * size if weighting == "upsample" else np.where(size > 0, ratio, 0.0)
    if weight.sum() <= 0:
        raise ValueError("no dataset can be drawn: every dataset is empty or has ratio 0")
    return weight / weight.sum()


class RatioSampler(Sampler[int]):
    """Global indices into a MixedDataset, dataset i drawn with its mixture probability; DDP-aware.

    Each epoch's global stream (length `num_samples` rounded up to a multiple of world_size) depends
    only on (seed, epoch); rank r yields stream[r::world_size]. Within a dataset, indices follow a
    seeded permutation, reshuffled each time it is used up, so no item repeats before all were seen.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        ratios: Sequence[float],
        num_samples: Optional[int] = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weighting: str = "probability",
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.sizes = [int(s) for s in sizes]
        self.probabilities = mixture_probabilities(self.sizes, ratios, weighting)
        total = sum(self.sizes) if num_samples is None else int(num_samples)
        if total < 1:
            raise ValueError(f"num_samples must be >= 1, got {total}")
        self.per_rank = -(-total // world_size)
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_stream(self, epoch: Optional[int] = None) -> np.ndarray:
        """(per_rank * world_size,) int64 global indices of one epoch, the same on every rank."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        length = self.per_rank * self.world_size
        choice = rng.choice(len(self.sizes), size=length, p=self.probabilities)
        stream = np.empty(length, np.int64)
        for which, size in enumerate(self.sizes):
            positions = np.flatnonzero(choice == which)
            if len(positions) == 0:
                continue
            passes = -(-len(positions) // size)
            local = np.concatenate([rng.permutation(size) for _ in range(passes)])[: len(positions)]
            stream[positions] = self.offsets[which] + local
        return stream

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_stream()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
