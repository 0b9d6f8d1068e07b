"""`python -m train`: train or fine-tune QueryMeldNet on a data spec or a labeled folder."""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from qmn.config import QUERY_MODES, get_preset, PRESETS
from qmn.model import QueryMeldNet, load_model
from train.data import resolve_data
from train.distributed import cleanup, init_distributed, training_device
from train.trainer import Trainer, TrainOptions, config_with, evaluate_heldout

EXAMPLES = """examples:
  python -m train --data runs/synth/panoptic --preset tiny --steps 2000 --out runs/tiny
  python -m train --data spec.yaml --steps 20000 --eval-every 1000 --out runs/default
  python -m train --data my_labeled_folder --init assets/qmn_tiny.safetensors --max-minutes 10 --out runs/ft
  torchrun --nproc_per_node 4 -m train --data spec.yaml --device cuda --out runs/ddp
  python -m train ... --resume       (continue an interrupted run in the same --out folder)

data spec (JSON or YAML):
  {"datasets": [{"path": "synth/panoptic", "task": "panoptic", "ratio": 2, "holdout": 0.05},
                {"path": "../shared/data/coco128", "task": "instance", "ratio": 1, "holdout": 0.2}]}
"""


NEW_LR = 2e-4
# fine-tuning the bundled model (backbone from scratch) on a new domain: 5e-4 reached held-out mask AP 44.3 after 200
# steps vs 38.9 at 2e-4 on a tuning split of the fruitsnuts mosaics (README, "Fine-tuning ... learning rate")
FINE_TUNE_SCRATCH_LR = 5e-4


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data spec (.json/.yaml) or a labeled folder")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, log.jsonl, plot.png)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset for a new model (default tiny)")
    p.add_argument("--init", help="fine-tune from this .safetensors checkpoint (its config is used)")
    p.add_argument("--resume", action="store_true", help="continue from --out/train_state.safetensors")
    p.add_argument("--query-mode", choices=QUERY_MODES, help="meld (default) | learnable | conditional, same total count")
    p.add_argument("--denoising", type=int, default=None,
                   help="label-denoising queries per image (DN-DETR / Mask DINO: noised ground-truth boxes and names the "
                        "decoder must correct; training only, no weights); default: the preset's / --init checkpoint's")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps (default 1000)")
    length.add_argument("--epochs", type=float, help="passes over the training images (sets --steps)")
    p.add_argument("--batch-size", type=int, default=4, help="images per process per step (default 4)")
    p.add_argument("--image-size", type=int, help="training square side in pixels (default: the preset's)")
    p.add_argument("--native-max-side", default="auto",
                   help="train on crops at the photos' own scale and predict in tiles, photos capped at this long side; "
                        "0 = shrink whole photos to --image-size; auto (default) = from the folder when fine-tuning "
                        "(--init): tiles when the whole-photo shrink leaves the median object under 32 px")
    p.add_argument("--lr", type=float, default=None,
                   help=f"base learning rate (default {NEW_LR:g}; {FINE_TUNE_SCRATCH_LR:g} when fine-tuning a backbone trained from "
                        "scratch, as the bundled model's)")
    p.add_argument("--backbone-lr-mult", type=float, default=None,
                   help="lr multiplier of backbone and text encoder (default: 0.1 for a pretrained backbone, 1.0 for one "
                        "trained from scratch, as the bundled model's)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default min(200, 5%% of steps))")
    p.add_argument("--grad-clip", type=float, default=None,
                   help="max gradient norm (default 0.1; 1.0 when fine-tuning with --init)")
    p.add_argument("--freeze-backbone", action="store_true", help="do not train the image backbone")
    p.add_argument("--freeze-text", action="store_true", help="keep the text encoder frozen (the default for MiniLM)")
    p.add_argument("--train-text", action="store_true", help="also train the text encoder (lr x0.1)")
    p.add_argument("--text-proj", choices=("keep", "train"), default="keep",
                   help="the projection of prompt embeddings into the model: keep the checkpoint's / preset's setting "
                        "(default; the presets keep it fixed so names stay apart) or train it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluate on held-out parts every N steps; keeps best.safetensors (default 0; with --init and no "
                        "--max-minutes: 5 evaluations over --steps)")
    p.add_argument("--eval-minutes", type=float, default=None,
                   help="evaluate every M minutes of training (default 0; with --init and --max-minutes: a fifth of it); "
                        "evaluations do not count against --max-minutes")
    p.add_argument("--patience", type=int, default=None,
                   help="after this many evaluations without a better held-out score drop the lr x10; after as many "
                        "more, stop; the best weights are kept (default 0 = never; 2 with --init)")
    p.add_argument("--eval-images", type=int, default=50, help="max held-out images per dataset per evaluation")
    p.add_argument("--holdout", type=float, default=None,
                   help="held-out fraction for a plain --data folder (default 0.2 with --init, else 0)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop cleanly after this many minutes (0 = no limit); the lr drops then happen at 90%%/95%% of the\n"
                        "budget or of --steps, whichever comes first")
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return p


SMALL_OBJECT_PX = 32  # COCO's "small" side: below it, in model pixels, a stride-4 mask can hardly draw an object


def native_max_side(choice: str, data, image_size: int) -> int | None:
    """--native-max-side: a number as given; "auto" (fine-tuning) reads the folder's photo and object sizes (a sample of
    20 training images): when shrinking the whole photo to `image_size` leaves the median object under
    SMALL_OBJECT_PX, train on crops at the photo's own scale (at most 4x `image_size` on the long side) and predict in
    tiles; otherwise the whole photo keeps its context (0). None = keep the checkpoint's value (no photos)."""
    if choice != "auto":
        return int(choice)
    photos = [part[i] for part in data.train for i in range(min(20, len(part)))]
    if not photos:
        return None
    photo_side = float(np.median([max(s.image.shape[:2]) for s in photos]))
    object_sides = [max(a.box[2] - a.box[0], a.box[3] - a.box[1]) for s in photos for a in s.annotations]
    if not object_sides or float(np.median(object_sides)) * image_size / photo_side >= SMALL_OBJECT_PX:
        return 0
    return int(min(photo_side, 4 * image_size))


def schedule_defaults(args: argparse.Namespace, cfg, steps: int) -> dict:
    """What "fine-tune with no flags" means: with --init the folder is a user's, so the run watches its held-out part
    (5 evaluations), keeps the best weights, anneals (lr x0.1) when they stop improving and stops when they stop
    again; a backbone trained from scratch (the bundled model's) learns at the full lr, and a higher one. Explicit
    flags always win."""
    fine_tune = bool(args.init)
    scratch = not cfg.backbone_pretrained
    eval_minutes = args.eval_minutes if args.eval_minutes is not None else (
        args.max_minutes / 5 if fine_tune and args.max_minutes > 0 else 0.0)
    eval_every = args.eval_every if args.eval_every is not None else (
        max(1, steps // 5) if fine_tune and not eval_minutes else 0)
    return {
        "lr": args.lr if args.lr is not None else (FINE_TUNE_SCRATCH_LR if fine_tune and scratch else NEW_LR),
        "backbone_lr_mult": args.backbone_lr_mult if args.backbone_lr_mult is not None else (0.1 if not scratch else 1.0),
        "grad_clip": args.grad_clip if args.grad_clip is not None else (1.0 if fine_tune else 0.1),
        "eval_every": eval_every,
        "eval_minutes": eval_minutes,
        "patience": args.patience if args.patience is not None else (2 if fine_tune else 0),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, argv: list[str]) -> int:
    import os

    device = training_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = init_distributed(device)
    try:
        holdout = args.holdout if args.holdout is not None else (0.2 if args.init else 0.0)
        data = resolve_data(args.data, default_holdout=holdout)
        if args.init:
            model = load_model(args.init)
            cfg = model.cfg
            if args.image_size:
                model.cfg = cfg = config_with(cfg, image_size=args.image_size)
            model.cfg = cfg = config_with(cfg, native_max_side=native_max_side(args.native_max_side, data, cfg.image_size),
                                          num_denoising=args.denoising)
        else:
            cfg = get_preset(args.preset)
            if args.query_mode:
                cfg = cfg.with_query_mode(args.query_mode)
            cfg = config_with(cfg, image_size=args.image_size, train_text_encoder=True if args.train_text else None,
                              num_denoising=args.denoising)
            if args.native_max_side != "auto":
                cfg = config_with(cfg, native_max_side=int(args.native_max_side))
            torch.manual_seed(args.seed)
            model = QueryMeldNet(cfg)
        if args.text_proj == "train":
            model.cfg = cfg = config_with(cfg, train_text_proj=True)
            model.text_proj.requires_grad_(True)
        if args.freeze_text and cfg.train_text_encoder:
            model.text_encoder.requires_grad_(False)
        train_images = sum(len(t) for t in data.train)
        steps = args.steps or 1000
        if args.epochs:
            steps = max(1, math.ceil(args.epochs * train_images / (args.batch_size * dist.world_size)))
        opts = TrainOptions(
            out=args.out, steps=steps, batch_size=args.batch_size, weight_decay=args.weight_decay,
            warmup_steps=args.warmup if args.warmup is not None else min(200, max(1, steps // 20)),
            seed=args.seed, log_every=args.log_every, save_every=args.save_every, eval_images=args.eval_images,
            max_minutes=args.max_minutes, workers=args.workers, **schedule_defaults(args, cfg, steps),
            amp=not args.no_amp, freeze_backbone=args.freeze_backbone,
            command="python -m train " + " ".join(shlex.quote(a) for a in argv))
        trainer = Trainer(model, data, opts, device, dist)
        if args.resume and trainer.resume() and dist.is_main:
            print(f"resumed from step {trainer.step}", file=sys.stderr)
        before = None
        if args.init and dist.is_main and any(len(h) for h in data.heldout):
            model.eval()
            before = evaluate_heldout(model, data, args.eval_images)
            model.train()
        result = trainer.fit()
        if before is not None:
            model.eval()
            after = result["eval"] if "score" in result["eval"] else evaluate_heldout(model, data, args.eval_images)
            report = {"before": before, "after": after, "steps": result["step"], "heldout_images": sum(len(h) for h in data.heldout)}
            trainer.save(after)
            if dist.is_main:
                from qmn.io_utils import atomic_write_json

                atomic_write_json(args.out / "before_after.json", report, indent=2)
                print(json.dumps(report, indent=2))
        return 0
    finally:
        cleanup(dist)
