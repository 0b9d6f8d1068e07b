"""Dataset mixing: ratio proportions globally and per rank, disjoint complete DDP slices, data spec errors."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from qmn.data.mixing import MixedDataset, RatioSampler, holdout_split, load_data_spec, mixture_probabilities

SIZES = [100, 10, 1000]
RATIOS = [3, 1, 6]


def _dataset_of(stream, offsets=(0, 100, 110, 1110)) -> np.ndarray:
    return np.searchsorted(np.asarray(offsets), np.asarray(stream), side="right") - 1


def _proportions(stream, k=3) -> np.ndarray:
    counts = np.bincount(_dataset_of(stream), minlength=k)
    return counts / counts.sum()


def test_probabilities_for_both_weightings():
    assert np.allclose(mixture_probabilities(SIZES, RATIOS), [0.3, 0.1, 0.6])
    upsample = np.array(RATIOS) * np.array(SIZES)
    assert np.allclose(mixture_probabilities(SIZES, RATIOS, "upsample"), upsample / upsample.sum())
    assert np.allclose(mixture_probabilities([5, 0], [1, 1]), [1, 0]), "empty datasets are never drawn"
    with pytest.raises(ValueError, match="ratios"):
        mixture_probabilities(SIZES, [1, -1, 1])
    with pytest.raises(ValueError, match="no dataset"):
        mixture_probabilities([3, 4], [0, 0])


def test_empirical_proportions_globally_and_per_rank():
    world = 4
    samplers = [RatioSampler(SIZES, RATIOS, num_samples=24000, seed=1, rank=r, world_size=world) for r in range(world)]
    assert np.allclose(_proportions(samplers[0].global_stream()), [0.3, 0.1, 0.6], atol=0.01)
    for sampler in samplers:
        assert len(sampler) == 6000
        assert np.allclose(_proportions(list(sampler)), [0.3, 0.1, 0.6], atol=0.02)


def test_distributed_slices_are_disjoint_and_complete():
    world = 3
    samplers = [RatioSampler(SIZES, RATIOS, num_samples=1000, seed=5, rank=r, world_size=world) for r in range(world)]
    for sampler in samplers:
        sampler.set_epoch(2)
    stream = samplers[0].global_stream()
    assert len(stream) == 1002, "rounded up so every rank gets the same count"
    slices = [list(s) for s in samplers]
    assert all(len(s) == 334 for s in slices)
    rebuilt = np.empty(len(stream), np.int64)
    for rank, items in enumerate(slices):
        rebuilt[rank::world] = items  # positions r, r+3, ... belong to rank r alone
    assert np.array_equal(rebuilt, stream)
    assert all(np.array_equal(s.global_stream(), stream) for s in samplers), "every rank sees one stream"


def test_epochs_and_seeds_change_the_stream_reproducibly():
    sampler = RatioSampler(SIZES, RATIOS, num_samples=200, seed=0)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(RatioSampler(SIZES, RATIOS, num_samples=200, seed=9)) != first


def test_no_repeat_within_a_dataset_before_it_is_used_up():
    sampler = RatioSampler([7, 50], [1, 1], num_samples=200, seed=3)
    small = [i for i in sampler.global_stream() if i < 7]
    assert len(small) > 14
    assert sorted(small[:7]) == list(range(7)) and sorted(small[7:14]) == list(range(7))


def test_mixed_dataset_indexing():
    mixed = MixedDataset([["a0", "a1"], [], ["c0", "c1", "c2"]], names=["a", "b", "c"])
    assert len(mixed) == 5 and mixed.sizes == [2, 0, 3]
    assert [mixed[i] for i in range(5)] == ["a0", "a1", "c0", "c1", "c2"]
    assert mixed.locate(2) == (2, 0)
    with pytest.raises(IndexError):
        mixed[5]
    sampler = RatioSampler(mixed.sizes, [1, 1, 1], num_samples=50, seed=0)
    drawn = Counter(mixed[i][0] for i in sampler)
    assert set(drawn) == {"a", "c"}


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        RatioSampler(SIZES, RATIOS, rank=2, world_size=2)
    with pytest.raises(ValueError, match="3 datasets but 2 ratios"):
        RatioSampler(SIZES, [1, 2])


# ---- data spec ----------------------------------------------------------------------------------


def _folders(tmp_path):
    for name in ("coco", "synth"):
        (tmp_path / name).mkdir()


def test_load_yaml_and_json_specs(tmp_path):
    _folders(tmp_path)
    (tmp_path / "mix.yaml").write_text(
        "weighting: upsample\n"
        "datasets:\n"
        "  - {path: coco, task: instance, ratio: 3, holdout: 0.1}\n"
        "  - {path: synth, name: shapes}\n"
    )
    spec = load_data_spec(tmp_path / "mix.yaml")
    assert spec.weighting == "upsample" and spec.ratios == [3.0, 1.0]
    coco, synth = spec.datasets
    assert coco.path == (tmp_path / "coco").resolve() and coco.name == "coco" and coco.task == "instance"
    assert coco.holdout == 0.1 and synth.name == "shapes" and synth.task is None and synth.holdout == 0.0
    (tmp_path / "mix.json").write_text(json.dumps({"datasets": [{"path": str(tmp_path / "synth"), "ratio": 2}]}))
    assert load_data_spec(tmp_path / "mix.json").datasets[0].ratio == 2.0


@pytest.mark.parametrize(
    "content, message",
    [
        ("datasets: []", "'datasets' must be a non-empty list"),
        ("[1, 2]", "expected a mapping"),
        ("datasets:\n  - {path: nowhere}", r"datasets\[0\]\.path 'nowhere' does not exist"),
        ("datasets:\n  - {path: coco, ratio: -1}", r"datasets\[0\]\.ratio must be a number >= 0"),
        ("datasets:\n  - {path: coco, ratio: yes}", r"datasets\[0\]\.ratio"),
        ("datasets:\n  - {path: coco, task: cartoon}", r"datasets\[0\]\.task must be one of"),
        ("datasets:\n  - {path: coco, holdout: 1.5}", r"datasets\[0\]\.holdout"),
        ("datasets:\n  - {path: coco, ratios: 2}", r"datasets\[0\] has unknown field\(s\) ratios"),
        ("datasets:\n  - {path: coco}\n  - {path: coco}", "name\\(s\\) used twice: coco"),
        ("datasets:\n  - {path: coco, ratio: 0}", "at least one dataset needs a ratio > 0"),
        ("weighting: sometimes\ndatasets:\n  - {path: coco}", "'weighting' must be one of"),
        ("datasets: [unclosed", "not valid YAML"),
    ],
)
def test_spec_errors_name_the_file_and_field(tmp_path, content, message):
    _folders(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_data_spec(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_spec_file_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_data_spec(tmp_path / "missing.yaml")
    (tmp_path / "bad.json").write_text("{'single': quotes}")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_data_spec(tmp_path / "bad.json")


def test_holdout_split_is_seeded_disjoint_and_complete():
    train, held = holdout_split(18, 0.1, seed=0)
    assert len(held) == 2 and sorted(train + held) == list(range(18))
    assert holdout_split(18, 0.1, seed=0) == (train, held)
    assert holdout_split(5, 0.01)[1] != [] and holdout_split(5, 0.0) == (list(range(5)), [])
    assert len(holdout_split(2, 0.9)[0]) == 1, "at least one item is kept for training"
