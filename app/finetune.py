"""Background fine-tuning: run `python -m train` as a subprocess and read its `log.jsonl`.

A subprocess (not a thread) keeps the UI responsive, survives a page reload, and can be cancelled by
terminating it. The trainer is the same one used from the shell.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from train.log import read_jsonl

REPO_ROOT = Path(__file__).resolve().parents[1]


EVAL_EVERY = 50  # steps between held-out evaluations (the "after" metrics)


def finetune_command(data_dir: Path, init_ckpt: Path, minutes: float, out_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "train", "--data", str(data_dir), "--init", str(init_ckpt),
        "--max-minutes", f"{minutes:g}", "--out", str(out_dir), "--eval-every", str(EVAL_EVERY),
    ]


def checkpoint_record(path: Path) -> dict:
    """The training record in a checkpoint's JSON (`{"config", "record"}`), {} when absent."""
    try:
        record = json.loads(path.with_suffix(".json").read_text()).get("record")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def find_checkpoint(out_dir: Path) -> Optional[Path]:
    """The trainer's model to switch to: best (by held-out eval), else last; never train_state."""
    for name in ("best.safetensors", "last.safetensors"):
        if (out_dir / name).is_file():
            return out_dir / name
    return None


@dataclass
class FineTuneJob:
    """One background fine-tune run: `run_dir/data` (training set), `run_dir/out` (trainer output)."""

    run_dir: Path
    minutes: float
    metrics_before: Optional[dict] = None  # the init checkpoint's recorded eval, if any
    process: Optional[subprocess.Popen] = None
    started: float = field(default_factory=time.time)
    cancelled: bool = False

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "out"

    def start(self, data_dir: Path, init_ckpt: Path) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_before = checkpoint_record(init_ckpt).get("eval") or None
        log = open(self.run_dir / "stdout.log", "wb")
        self.process = subprocess.Popen(
            finetune_command(data_dir, init_ckpt, self.minutes, self.out_dir),
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()  # the child holds its own handle

    def cancel(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.cancelled = True
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self) -> dict:
        """Progress in [0, 1] (time over the budget: the trainer stops at it), phase, loss curve [(step, loss)], first/last eval metrics, checkpoint."""
        records = read_jsonl(self.out_dir / "log.jsonl")
        losses = [(int(r.get("step", i)), float(r["loss"])) for i, r in enumerate(records) if isinstance(r.get("loss"), (int, float))]
        evals = [r["eval"] for r in records if isinstance(r.get("eval"), dict)]
        elapsed = time.time() - self.started
        progress = min(1.0, elapsed / max(self.minutes * 60.0, 1.0))
        code = None if self.process is None else self.process.poll()
        if self.cancelled:
            phase = "cancelled"
        elif code is None:
            phase = "running"
        else:
            phase = "finished" if code == 0 else f"failed (exit code {code})"
        checkpoint = find_checkpoint(self.out_dir) if phase == "finished" else None
        tail = ""
        if phase.startswith("failed"):
            out = (self.run_dir / "stdout.log").read_text(errors="replace").strip().splitlines()
            tail = out[-1] if out else ""
        return {
            "phase": phase,
            "progress": 1.0 if phase == "finished" else round(progress, 3),
            "elapsed_s": round(elapsed, 1),
            "losses": losses,
            **self._before_after(evals),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "run_dir": str(self.run_dir),
            "error": tail,
        }

    def _before_after(self, evals: list[dict]) -> dict:
        """The trainer's own `before_after.json` (held-out eval before and after) once written, else
        the init checkpoint's recorded eval and the latest eval in the log."""
        try:
            report = json.loads((self.out_dir / "before_after.json").read_text())
            return {"metrics_before": report["before"], "metrics_after": report["after"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {"metrics_before": self.metrics_before, "metrics_after": evals[-1] if evals else None}


class FineTuneRegistry:
    """Fine-tune jobs keyed by session hash: each browser session sees only its own run."""

    def __init__(self) -> None:
        self._jobs: dict[str, FineTuneJob] = {}

    def get(self, key: str) -> Optional[FineTuneJob]:
        return self._jobs.get(key)

    def start(self, key: str, data_dir: Path, init_ckpt: Path, minutes: float, run_dir: Path) -> FineTuneJob:
        current = self._jobs.get(key)
        if current is not None and current.running:
            raise ValueError("a fine-tune is already running for this session: cancel it first")
        job = FineTuneJob(run_dir=run_dir, minutes=minutes)
        job.start(data_dir, init_ckpt)
        self._jobs[key] = job
        return job

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancel()
