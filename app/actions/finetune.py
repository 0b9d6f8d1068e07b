"""Fine-tuning from the app: start on the folder's done images, poll, cancel, switch to the new model (only
when it scored at least as well on the held-out images), roll back. Jobs are keyed by folder, so a reload
(a new browser session) finds its run again."""
from __future__ import annotations

import time

from app.actions.reply import Reply, refusals_as_replies, refused
from app.finetune import FineTuneRegistry
from app.model_host import ModelHost
from app.session import SessionState
from app.training_set import training_refusal, write_training_set

IDLE = {"phase": "idle", "note": "", "progress": 0.0, "losses": [], "may_switch": False, "verdict": ""}


@refusals_as_replies
def start(session: SessionState, host: ModelHost, jobs: FineTuneRegistry, minutes: float) -> Reply:
    ws = session.workspace
    refusal = training_refusal(ws)
    if refusal:
        return refused(refusal)
    run_dir = ws.state_dir / "finetune" / time.strftime("run_%Y%m%d_%H%M%S")
    data_dir = write_training_set(ws, run_dir / "data")
    init = host.checkpoint
    if init is None:
        init = run_dir / "init.safetensors"
        host.model.save(str(init))
    jobs.start(str(ws.folder), data_dir, init, float(minutes), run_dir)
    return Reply(f"Fine-tune started in {run_dir}: preparing.")


def status(session: SessionState, jobs: FineTuneRegistry) -> Reply:
    """Value: the job's status dict (IDLE when none ran for this folder); message: phase, progress, verdict."""
    job = jobs.get(str(session.folder)) if session.folder else None
    st = job.status() if job else dict(IDLE)
    line = f"**{st['phase']}**" + (f" ({st['note']})" if st["note"] else "") + f" · {100 * st['progress']:.0f}%"
    extra = st.get("error") or st.get("verdict") or ""
    return Reply(line + (f" · {extra}" if extra else ""), ok=not st.get("error"), value=st)


@refusals_as_replies
def cancel(session: SessionState, jobs: FineTuneRegistry) -> Reply:
    job = jobs.get(str(session.folder)) if session.folder else None
    if job is None or not job.running:
        return refused("no fine-tune is running for this folder")
    job.cancel()
    return Reply("Fine-tune cancelled; the current model stays.")


@refusals_as_replies
def switch(session: SessionState, host: ModelHost, jobs: FineTuneRegistry) -> Reply:
    """Load the finished run's checkpoint if it scored at least as well as the current model on held-out labels."""
    job = jobs.get(str(session.folder)) if session.folder else None
    st = job.status() if job else IDLE
    if not st.get("checkpoint"):
        return refused("no finished fine-tune to switch to")
    if not st["may_switch"]:
        return refused(st["verdict"])
    host.load(st["checkpoint"])
    return Reply(f"Switched to {st['checkpoint']}. Re-predict unreviewed images to review them.")


@refusals_as_replies
def rollback(host: ModelHost) -> Reply:
    host.rollback()
    return Reply(f"Rolled back to {host.checkpoint or 'the untrained model'}.")
