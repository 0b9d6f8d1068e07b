"""Background fine-tuning: run `python -m train` as a subprocess and read what it writes.

A subprocess (not a thread) keeps the UI responsive, survives a page reload, and can be cancelled by
terminating it. The trainer is the same one used from the shell. Its outputs tell the phase: no loss line yet
= preparing (loading, scoring the current model on the held-out images), loss lines = training, the "event"
line that ends training = evaluating the new model; `before_after.json` holds both held-out scores, and the
new model is offered only when it scores at least as well as the current one.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from app.training_set import HOLDOUT
from train.log import read_jsonl

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_EVERY = 1  # one loss point per step: a short run still draws a curve
PHASE_NOTES = {
    "preparing": "loading the model and scoring the current one on the held-out images",
    "training": "training on your done images",
    "evaluating": "scoring the new model on the held-out images",
}


def finetune_command(data_dir: Path, init_ckpt: Path, minutes: float, out_dir: Path) -> list[str]:
    """The shell's fine-tune (`python -m train --init`, its defaults: held-out evaluations, best weights kept, the lr
    annealed at a plateau, early stop) with the app's held-out fraction and a loss point per step."""
    return [
        sys.executable, "-m", "train", "--data", str(data_dir), "--init", str(init_ckpt),
        "--max-minutes", f"{minutes:g}", "--out", str(out_dir), "--log-every", str(LOG_EVERY), "--holdout", str(HOLDOUT),
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


def verdict(before: Optional[dict], candidate: Optional[dict]) -> tuple[bool, str]:
    """(may switch, why): the new model must score at least the current one's held-out "score"."""
    b, a = (m.get("score") if isinstance(m, dict) else None for m in (before, candidate))
    if not isinstance(b, (int, float)) or not isinstance(a, (int, float)):
        return False, "No held-out score for both models: cannot tell whether the new one is better; not offered."
    if a < b:
        return False, (f"The new model scores {a:.3f} on the held-out images, below the current {b:.3f}: "
                       "keeping the current model (label more images, or train longer).")
    return True, f"The new model scores {a:.3f} on the held-out images (current {b:.3f}): you can switch to it."


@dataclass
class FineTuneJob:
    """One background fine-tune run: `run_dir/data` (training set), `run_dir/out` (trainer output)."""

    run_dir: Path
    minutes: float
    process: Optional[subprocess.Popen] = None
    started: float = field(default_factory=time.time)
    cancelled: bool = False

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "out"

    def start(self, data_dir: Path, init_ckpt: Path) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
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

    def _phase(self, records: list[dict], has_losses: bool) -> str:
        code = None if self.process is None else self.process.poll()
        if self.cancelled:
            return "cancelled"
        if code is not None:
            return "finished" if code == 0 else f"failed (exit code {code})"
        if any("event" in r for r in records):
            return "evaluating"
        return "training" if has_losses else "preparing"

    def _progress(self, phase: str, records: list[dict]) -> float:
        """Preparing 0-5%, training 5-90% by the time budget, evaluating 90%, finished 100%."""
        if phase == "finished":
            return 1.0
        if phase == "evaluating":
            return 0.9
        elapsed = max((float(r.get("elapsed_s", 0.0)) for r in records if "loss" in r), default=0.0)
        return round(0.05 + 0.85 * min(1.0, elapsed / max(self.minutes * 60.0, 1.0)), 3) if elapsed else 0.02

    def status(self) -> dict:
        """Phase (+ note), progress in [0, 1], loss curve [(step, loss)], held-out metrics before / after,
        whether switching is allowed and why, checkpoint."""
        records = read_jsonl(self.out_dir / "log.jsonl")
        losses = [(int(r.get("step", i)), float(r["loss"])) for i, r in enumerate(records) if isinstance(r.get("loss"), (int, float))]
        evals = [r["eval"] for r in records if isinstance(r.get("eval"), dict)]
        phase = self._phase(records, bool(losses))
        checkpoint = find_checkpoint(self.out_dir) if phase == "finished" else None
        before, after = self._before_after(evals)
        may_switch, why = verdict(before, checkpoint_record(checkpoint).get("heldout_metrics") or after) \
            if checkpoint else (False, "")
        tail = ""
        if phase.startswith("failed"):
            out = (self.run_dir / "stdout.log").read_text(errors="replace").strip().splitlines()
            tail = out[-1] if out else ""
        return {
            "phase": phase,
            "note": PHASE_NOTES.get(phase, ""),
            "progress": self._progress(phase, records),
            "elapsed_s": round(time.time() - self.started, 1),
            "losses": losses,
            "metrics_before": before,
            "metrics_after": after,
            "may_switch": may_switch,
            "verdict": why,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "run_dir": str(self.run_dir),
            "error": tail,
        }

    def _before_after(self, evals: list[dict]) -> tuple[Optional[dict], Optional[dict]]:
        """The trainer's `before_after.json` (both held-out evaluations) once written, else (None, latest eval)."""
        try:
            report = json.loads((self.out_dir / "before_after.json").read_text())
            return report["before"], report["after"]
        except (OSError, ValueError, KeyError, TypeError):
            return None, evals[-1] if evals else None


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
