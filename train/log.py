"""Run records: one JSON line per logged step (`log.jsonl`) and a PNG plot of losses and eval metrics."""
from __future__ import annotations

import json
from pathlib import Path

from qmn.io_utils import atomic_path

PLOTTED_LOSSES = ("loss", "loss_class", "loss_mask", "loss_dice", "loss_bbox", "loss_giou")


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line; a line is written with one write call, so a crash cannot leave a torn record mid-file."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL log; a torn last line (a kill, or the trainer still writing) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def truncate_after(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint we resume from (they will be redone)."""
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def plot_run(log_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(log_path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in PLOTTED_LOSSES:
        pts = [(r["step"], r[key]) for r in train if key in r]
        if pts:
            axes[0].plot(*zip(*pts), label=key, linewidth=1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training losses")
    axes[0].legend(fontsize=7)
    for key in sorted({k for r in evals for k in r["eval"]}):
        pts = [(r["step"], r["eval"][key]) for r in evals if isinstance(r["eval"].get(key), (int, float))]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=key, linewidth=1)
    axes[1].set_xlabel("step")
    axes[1].set_title("held-out metrics")
    if evals:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
