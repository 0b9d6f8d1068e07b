"""The trainer through its public CLI (`python -m train` / `train.cli.main`): it learns, resumes bit-exactly, survives
kill -9, runs 2-process gloo DDP like one process at the same global batch, draws datasets in their ratios per rank,
reports before/after metrics when fine-tuning, and stops cleanly on its time budget.

Every run uses a micro model (the conftest's `micro_cfg` at 64 px) passed as `--init CKPT` (the CLI then trains that
config), on generated 64 px scenes, one torch thread."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train.cli
import train.trainer
from qmn import load_model
from qmn.checkpoint import read_safetensors
from qmn.data.mixing import DataSpec, DatasetSpec
from qmn.data.synth import generate
from train.cli import main
from train.data import Subset, TrainingData, make_loader
from train.log import read_jsonl
from train.state import load_train_state

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """`--threads 1` sets torch's process-wide thread count; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """10 labeled panoptic scenes, 64 px."""
    return generate(tmp_path_factory.mktemp("scenes"), 10, seed=0, size=SIZE, variant="panoptic")


@pytest.fixture(scope="module")
def micro_ckpt(tmp_path_factory, micro_cfg) -> Path:
    """A freshly initialised micro model saved as a checkpoint: `--init` makes the CLI train its (tiny) config."""
    from qmn import QueryMeldNet

    cfg = dataclasses.replace(micro_cfg, image_size=SIZE)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "micro.safetensors"
    QueryMeldNet(cfg).save(path)
    return path


def train_argv(data: Path, ckpt: Path, out: Path, steps: int, *extra: str, batch_size: int = 2) -> list[str]:
    """Arguments of a short, fast-learning run with no held-out part, logging every step."""
    return ["--data", str(data), "--init", str(ckpt), "--holdout", "0", "--out", str(out), "--steps", str(steps),
            "--batch-size", str(batch_size), "--lr", "1e-3", "--backbone-lr-mult", "1", "--grad-clip", "1",
            "--log-every", "1", "--save-every", "1000", "--threads", "1", *extra]


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def loss_records(out: Path) -> list[dict]:
    return [r for r in read_jsonl(out / "log.jsonl") if "loss" in r]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(out / "last.safetensors")


# ---------------------------------------------------------------------------------------------- learning
def test_a_short_run_lowers_the_loss_and_writes_its_record(scenes, micro_ckpt, tmp_path):
    out = tmp_path / "run"
    assert main(train_argv(scenes, micro_ckpt, out, 30)) == 0
    records = loss_records(out)
    assert [r["step"] for r in records] == list(range(1, 31))
    losses = np.array([r["loss"] for r in records])
    assert np.isfinite(losses).all()
    first, last = losses[:5].mean(), losses[-5:].mean()
    assert last < 0.85 * first, f"loss did not drop: first five {first:.2f}, last five {last:.2f}"
    assert read_jsonl(out / "log.jsonl")[-1] == {"step": 30, "event": "done"}
    model = load_model(out / "last.safetensors")
    assert model.record["steps"] == 30 and model.record["world_size"] == 1
    assert model.record["data"][0]["train_images"] == 10
    assert (out / "plot.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------- resume
def test_an_interrupted_and_resumed_run_equals_the_uninterrupted_one(scenes, micro_ckpt, tmp_path, monkeypatch):
    steps, stop_after = 8, 4
    assert main(train_argv(scenes, micro_ckpt, tmp_path / "whole", steps)) == 0

    # the interrupted run has the same --steps (the lr schedule depends on it) and stops at the time-budget exit
    calls = []

    def budget_reached_after_stop_step(flag, dist, device):
        calls.append(flag)
        return len(calls) >= stop_after

    part = tmp_path / "part"
    with monkeypatch.context() as patch:
        patch.setattr(train.trainer, "broadcast_flag", budget_reached_after_stop_step)
        assert main(train_argv(scenes, micro_ckpt, part, steps, "--max-minutes", "1000")) == 0
    assert read_jsonl(part / "log.jsonl")[-1] == {"step": stop_after, "event": "stopped at time budget"}
    assert load_train_state(part / "train_state.safetensors")[2]["step"] == stop_after

    assert main(train_argv(scenes, micro_ckpt, part, steps, "--resume")) == 0
    whole, resumed = final_weights(tmp_path / "whole"), final_weights(part)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), "resumed weights differ from the uninterrupted run"
    _, whole_optim, _ = load_train_state(tmp_path / "whole" / "train_state.safetensors")
    _, resumed_optim, meta = load_train_state(part / "train_state.safetensors")
    assert meta["step"] == steps
    for idx, state in whole_optim["state"].items():
        assert all(torch.equal(v, resumed_optim["state"][idx][k]) for k, v in state.items() if torch.is_tensor(v))
    # the resumed log has each step once, with the losses of the uninterrupted run
    assert [(r["step"], r["loss"]) for r in loss_records(part)] == [(r["step"], r["loss"]) for r in loss_records(tmp_path / "whole")]


@pytest.mark.slow
def test_kill_9_during_training_leaves_loadable_checkpoints(scenes, micro_ckpt, tmp_path):
    out = tmp_path / "killed"
    argv = train_argv(scenes, micro_ckpt, out, 100_000)
    argv[argv.index("--save-every") + 1] = "1"  # a checkpoint write every step: the kill lands in or near one
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "train", *argv], cwd=REPO, env=subprocess_env(),
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        first = (out / "train_state.safetensors", out / "last.safetensors", out / "last.json")
        while not all(p.exists() for p in first):
            assert proc.poll() is None, f"trainer exited early: {stderr_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(random.Random(0).uniform(0.2, 1.5))
        assert proc.poll() is None, "the trainer finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    model_state, optim_state, meta = load_train_state(out / "train_state.safetensors")
    model = load_model(out / "last.safetensors")
    assert meta["step"] >= 1 and optim_state["state"]
    assert model_state.keys() == model.state_dict().keys()
    assert all(torch.isfinite(v).all() for v in model_state.values() if v.is_floating_point())


# ---------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process_at_equal_global_batch(scenes, micro_ckpt, tmp_path):
    """Same global batch (1 process x 4 images vs 2 ranks x 2), same augmentations (seeded by global slot), same loss
    normaliser (the criterion all-reduces the target count), same prompt list (the 15-word vocabulary is always all in).
    What differs: each rank samples its mask points from its own RNG stream. Measured at the first step: the averaged
    DDP gradient has cosine 0.999 with the one-process gradient, while rank 0's half alone has 0.88. AdamW turns
    each gradient coordinate into a step of about +-lr, so near-zero coordinates flip with the noise and, at a large
    lr, the Hungarian matching drifts apart within a few steps; hence a small lr, 3 steps, and the cosine between the
    two weight updates: measured 0.984-0.988 (the ratio |diff| / |update| 0.18), against 0.37 for a one-process run with
    another seed and about 0.56 for an update from one rank's half of the batch. Bound: cosine > 0.9."""
    steps = 3
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(train_argv(scenes, micro_ckpt, single, steps, "--lr", "1e-4", batch_size=4)) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
           *train_argv(scenes, micro_ckpt, ddp, steps, "--lr", "1e-4", "--device", "cpu", batch_size=2),
           "--max-minutes", "1000"]  # a budget far off: only makes the ranks share rank 0's clock each step
    done = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    init, one, two = read_safetensors(micro_ckpt), final_weights(single), final_weights(ddp)
    keys = [k for k in init if init[k].is_floating_point()]
    update = lambda state: torch.cat([(state[k] - init[k]).double().flatten() for k in keys])  # noqa: E731
    a, b = update(one), update(two)
    cosine = float(a @ b / (a.norm() * b.norm()))
    assert cosine > 0.9, f"DDP and one-process updates point apart: cosine {cosine:.3f}"

    # only rank 0 wrote: each step logged once, every line whole, one end event; the record knows the world size
    lines = (ddp / "log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, steps + 1))
    assert [r for r in records if "event" in r] == [{"step": steps, "event": "done"}]
    assert json.loads((ddp / "last.json").read_text())["record"]["world_size"] == 2
    assert sorted(p.name for p in ddp.iterdir()) == ["last.json", "last.safetensors", "log.jsonl", "plot.png",
                                                      "train_state.safetensors"]


# ---------------------------------------------------------------------------------------------- data plan
class CountingDataset:
    """Stands in for a dataset: only its length matters to the batch plan."""

    def __init__(self, name: str, size: int) -> None:
        self.task, self.vocabulary, self.image_ids, self.root = "panoptic", [name], [f"{name}{i}" for i in range(size)], None

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int):
        raise AssertionError("the batch plan must not load samples")


def batch_plan(micro_cfg, data: TrainingData, batch_size: int, world: int, rank: int, start: int, total: int) -> list:
    """The (step, slot, global index) keys the trainer's StepBatchSampler gives this rank, step by step."""
    loader = make_loader(data, micro_cfg, batch_size, seed=3, rank=rank, world=world, start_step=start,
                         total_steps=total, workers=0)
    return list(loader.batch_sampler)


def test_step_batch_sampler_draws_the_ratios_globally_and_splits_them_by_rank(micro_cfg):
    sizes, ratios = (10, 30, 5), (2.0, 1.0, 1.0)
    specs = tuple(DatasetSpec(path=Path(n), name=n, ratio=r) for n, r in zip("abc", ratios))
    datasets = [CountingDataset(n, s) for n, s in zip("abc", sizes)]
    data = TrainingData(DataSpec(specs), [Subset(d, range(len(d))) for d in datasets], [Subset(d, []) for d in datasets])
    steps = 500

    plan = batch_plan(micro_cfg, data, batch_size=4, world=1, rank=0, start=0, total=steps)
    assert [len(b) for b in plan] == [4] * steps and [b[0][0] for b in plan] == list(range(steps))
    indices = np.array([index for b in plan for _, _, index in b])
    assert indices.min() >= 0 and indices.max() < sum(sizes)
    which = np.searchsorted(np.cumsum(sizes), indices, side="right")  # global index -> dataset
    share = np.bincount(which, minlength=3) / len(which)
    # 2000 draws: the standard error of each share is <= 0.011; 0.04 is > 3.5 of them
    np.testing.assert_allclose(share, np.array(ratios) / sum(ratios), atol=0.04)

    # two ranks at batch 2 split exactly the single process's global batch of 4 (rank r takes slots r, r + 2)
    ranks = [batch_plan(micro_cfg, data, batch_size=2, world=2, rank=r, start=0, total=steps) for r in (0, 1)]
    for step, (whole, r0, r1) in enumerate(zip(plan, *ranks)):
        assert [k[1] for k in r0] == [0, 2] and [k[1] for k in r1] == [1, 3]
        assert sorted(r0 + r1) == sorted(whole), f"step {step}: ranks do not partition the global batch"

    # a resumed plan continues exactly where the uninterrupted one is
    assert batch_plan(micro_cfg, data, batch_size=2, world=2, rank=1, start=123, total=steps) == ranks[1][123:]


# ---------------------------------------------------------------------------------------------- fine-tune, budget, help
def test_fine_tuning_with_init_reports_before_and_after_metrics(scenes, micro_ckpt, tmp_path, capsys):
    out = tmp_path / "ft"
    argv = train_argv(scenes, micro_ckpt, out, 3)
    del argv[argv.index("--holdout"):argv.index("--holdout") + 2]  # --init's default: hold out 20% of the folder
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "before_after.json").read_text())
    assert printed["steps"] == 3 and printed["heldout_images"] == 2
    for side in ("before", "after"):
        assert "score" in printed[side] and 0.0 <= printed[side]["score"] <= 1.0
        assert any(k.startswith(f"{scenes.name}/") for k in printed[side])
    record = load_model(out / "last.safetensors").record
    assert record["heldout_metrics"] == printed["after"] and record["data"][0]["heldout_images"] == 2


def test_max_minutes_stops_cleanly_with_a_checkpoint(scenes, micro_ckpt, tmp_path):
    out = tmp_path / "budget"
    assert main(train_argv(scenes, micro_ckpt, out, 10_000, "--max-minutes", "0.0001")) == 0
    log = read_jsonl(out / "log.jsonl")
    stopped = log[-1]["step"]
    assert log[-1] == {"step": stopped, "event": "stopped at time budget"} and 1 <= stopped < 10_000
    assert load_model(out / "last.safetensors").record["steps"] == stopped
    assert load_train_state(out / "train_state.safetensors")[2]["step"] == stopped


def test_help_names_the_main_flags_and_bad_data_is_one_clear_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--out", "--preset", "--init", "--resume", "--steps", "--epochs", "--batch-size",
                 "--image-size", "--lr", "--max-minutes", "--eval-every", "--device", "torchrun"):
        assert flag in text, flag
    missing = tmp_path / "nowhere"
    assert main(["--data", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err


# ---------------------------------------------------------------------------------------------- fine-tune defaults
def test_fine_tuning_anneals_at_a_plateau_then_stops_and_keeps_the_best(scenes, micro_ckpt, tmp_path, monkeypatch):
    """--init: 2 evaluations without a better score drop the lr x10 (instead of stopping at the full lr), 2 more
    stop; the best weights are kept (and their metrics reported as "after"). Held-out scores are scripted: best at
    the 2nd evaluation."""
    scripted = iter([0.10, 0.30, 0.50, 0.20, 0.25, 0.1, 0.1, 0.1])  # before, then one per evaluation

    def evaluate_heldout(model, data, max_images):
        return {"score": next(scripted), "weight_sum": float(sum(p.double().sum() for p in model.parameters()))}

    monkeypatch.setattr(train.trainer, "evaluate_heldout", evaluate_heldout)
    monkeypatch.setattr(train.cli, "evaluate_heldout", evaluate_heldout)
    out = tmp_path / "ft"
    argv = ["--data", str(scenes), "--init", str(micro_ckpt), "--out", str(out), "--steps", "40", "--eval-every", "4",
            "--batch-size", "2", "--lr", "1e-3", "--warmup", "1", "--log-every", "1", "--threads", "1"]
    assert main(argv) == 0
    log = read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in log if "eval" in r] == [4, 8, 12, 16, 20, 24]
    events = [(r["step"], r["event"]) for r in log if "event" in r and not r["event"].startswith("kept best")]
    assert events[0][0] == 16 and events[0][1].startswith("held-out score flat")  # 12 and 16 are not better than 8
    lr = {r["step"]: r["lr"] for r in log if "lr" in r}
    assert lr[16] == pytest.approx(1e-3) and lr[17] == pytest.approx(1e-4)  # annealed at the plateau, not at 90%
    assert events[-1][0] == 24 and events[-1][1].startswith("stopped early")  # 20 and 24 not better either
    report = json.loads((out / "before_after.json").read_text())
    assert report["before"]["score"] == 0.10 and report["after"]["score"] == 0.50
    kept = read_safetensors(out / "last.safetensors")
    best = read_safetensors(out / "best.safetensors")
    assert all(torch.equal(kept[k], best[k]) for k in best)
    assert load_model(out / "last.safetensors").record["heldout_metrics"]["score"] == 0.50


def test_schedule_defaults_follow_the_checkpoint_and_explicit_flags_win():
    from train.cli import build_parser, schedule_defaults

    scratch, pretrained = SimpleNamespace(backbone_pretrained=""), SimpleNamespace(backbone_pretrained="hub")
    ft = build_parser().parse_args(["--data", "d", "--out", "o", "--init", "c.safetensors", "--max-minutes", "10"])
    assert schedule_defaults(ft, scratch, 1000) == {"lr": 5e-4, "backbone_lr_mult": 1.0, "grad_clip": 1.0,
                                                     "eval_every": 0, "eval_minutes": 2.0, "patience": 2}
    assert (schedule_defaults(ft, pretrained, 1000)["backbone_lr_mult"], schedule_defaults(ft, pretrained, 1000)["lr"]) == (
        0.1, 2e-4)
    new = build_parser().parse_args(["--data", "d", "--out", "o", "--steps", "100"])
    assert schedule_defaults(new, scratch, 100) == {"lr": 2e-4, "backbone_lr_mult": 1.0, "grad_clip": 0.1,
                                                    "eval_every": 0, "eval_minutes": 0.0, "patience": 0}
    explicit = build_parser().parse_args(["--data", "d", "--out", "o", "--init", "c", "--patience", "0",
                                          "--eval-every", "7", "--grad-clip", "0.5", "--lr", "1e-4"])
    got = schedule_defaults(explicit, scratch, 1000)
    assert (got["patience"], got["eval_every"], got["grad_clip"], got["lr"]) == (0, 7, 0.5, 1e-4)


def test_auto_resolution_reads_photo_and_object_sizes():
    """Small objects in big photos -> crops at the photo's scale (capped at 4x the model side); objects that stay
    >= 32 px after the whole-photo shrink -> whole photos (context wins: clothing measured 0.29 vs 0.20 mIoU at
    ~150 steps, README)."""
    from qmn.data.sample import Annotation, Sample
    from train.cli import native_max_side

    def folder(photo_hw: tuple[int, int], side: int) -> SimpleNamespace:
        mask = np.zeros(photo_hw, bool)
        mask[10:10 + side, 10:10 + side] = True
        sample = Sample(np.zeros((*photo_hw, 3), np.uint8), [Annotation.from_mask("nut", mask)], "instance")
        return SimpleNamespace(train=[[sample] * 3])

    assert native_max_side("auto", folder((1200, 1600), 120), 256) == 1024  # 120 px -> 19 px whole: tiles
    assert native_max_side("auto", folder((1200, 1600), 300), 256) == 0  # 300 px -> 48 px whole: whole photo
    assert native_max_side("auto", folder((600, 700), 60), 256) == 700  # capped by the photo itself
    assert native_max_side("auto", SimpleNamespace(train=[[]]), 256) is None
    assert native_max_side("0", folder((1200, 1600), 120), 256) == 0


def test_denoising_flag_trains_label_denoising_queries_from_any_checkpoint(scenes, micro_ckpt, tmp_path):
    """The bundled checkpoint has no denoising: `--denoising N` turns it on (no new weights) and it is recorded."""
    from qmn.checkpoint import read_meta

    out = tmp_path / "dn"
    assert main(train_argv(scenes, micro_ckpt, out, 2, "--denoising", "2")) == 0
    records = loss_records(out)
    assert records and all(r["loss_class_dn"] > 0 and r["loss_mask_dn"] > 0 for r in records)
    assert read_meta(out / "last.safetensors")["config"]["num_denoising"] == 2


def test_text_proj_flag_trains_a_fixed_projection_only_when_asked(scenes, micro_ckpt, tmp_path):
    """The presets keep `text_proj` fixed; `--text-proj train` unfreezes it for a fine-tune (and records it)."""
    initial = read_safetensors(micro_ckpt)["text_proj.weight"]
    for flag, trained in (("keep", False), ("train", True)):
        out = tmp_path / flag
        assert main(train_argv(scenes, micro_ckpt, out, 2, "--text-proj", flag)) == 0
        after = load_model(out / "last.safetensors")
        assert after.cfg.train_text_proj is trained
        assert torch.equal(after.text_proj.weight, initial) is not trained
