"""Why are thing classes not learned? Measures a checkpoint on fresh-seed synthetic panoptic scenes and audits the
training batches the trainer builds. Prints one JSON object.

    OMP_NUM_THREADS=1 python bench/diagnose_classes.py [--checkpoint assets/qmn_tiny.safetensors] [--seed 9001]
        [--num-images 50] [--probe-images 100] [--audit-batches 150] [--gradient-batches 0]

Model side (last decoder layer, prompts = the 9 shapes + 6 stuff names):
  - per class: recall of ground-truth masks by ANY matched query (mask IoU > 0.5), and "named": that query's argmax
    prompt is the right one; a confusion matrix of names for the found things; by synthetic size class too
  - the class head's logit scale / bias; the logit of the right name vs the best wrong one, for things and stuff
  - which query type (learnable / conditional) finds things; how many of the K conditional proposals land on things
  - linear probes (standardised logistic regression, split by scene) -> shape, of: the decoder feature of the best-IoU
    query, its class-head projection, the encoder memory pooled in the true mask, and the query's own predicted mask
    cropped to 16x16 (is the shape visible to the model at all?); the pairwise cosine of the nine names, raw MiniLM
    and after `text_proj`
  - mask AP of the things (COCO small / medium / large), found from the panoptic prompts
Data side (`--audit-batches` batches built exactly as the trainer builds them from a spec mixing the synthetic tasks
with the default ratios): how often a thing is trained as a NEGATIVE of its own shape name (it carries a phrase or
"foreground" while its shape name is in the batch's shared prompt list), and how many thing targets are so small
after large-scale jitter that the shape cannot be seen; with the old rule and with per-image negatives.
`--gradient-batches N`: whether the class-loss gradient on `text_proj` pulls the nine names apart or together, per rule.
See docs/why_things.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qmn import load_model  # noqa: E402
from qmn.batching import prepare_image  # noqa: E402
from qmn.data.synth import STUFF_CLASSES, THING_SHAPES, SyntheticScenes  # noqa: E402

NAMES = list(THING_SHAPES) + list(STUFF_CLASSES)


def _iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pred (Q, P) bool, gt (M, P) bool -> (Q, M) IoU."""
    p, g = pred.astype(np.float32), gt.astype(np.float32)
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None] - inter
    return inter / np.maximum(union, 1)


@torch.no_grad()
def run_model(model, scenes, limit: int) -> list[dict]:
    """Per scene: GT, last-layer logits / masks / hidden features, the conditional proposals' boxes."""
    captured = {}
    hook = model.decoder.register_forward_hook(lambda m, i, o: captured.__setitem__("dec", o))
    hook_enc = model.encoder.register_forward_hook(lambda m, i, o: captured.__setitem__("enc", o))
    hook_region = (None if model.region_features is None else  # called once per decoder layer: the last call stays
                   model.region_features.register_forward_hook(lambda m, i, o: captured.__setitem__("region", o)))
    cfg = model.cfg
    text_index = {n: i for i, n in enumerate(NAMES)}
    rows = []
    for i in range(limit):
        s = scenes[i]
        prep = prepare_image(s.image, cfg.image_size, cfg.pixel_mean, cfg.pixel_std)
        out = model(prep.tensor[None], NAMES)
        last = out.layers[-1]
        nq = out.num_learnable + out.num_conditional
        masks = F.interpolate(last.masks[:, :nq].float(), size=(cfg.image_size,) * 2, mode="bilinear",
                              align_corners=False)[0] > 0
        h, w = prep.valid_hw
        masks = masks[:, :h, :w].reshape(nq, -1).numpy()
        gts = [(a.mask if a.mask.shape == (h, w) else None, a) for a in s.annotations]
        gt_masks = np.stack([m.reshape(-1) for m, _ in gts])
        level0 = captured["enc"].level_map(0)[0].float()  # (C, S/8, S/8) encoder memory, stride 8
        small = F.interpolate(torch.from_numpy(gt_masks.reshape(-1, 1, h, w)).float(), size=level0.shape[-2:],
                              mode="area")[:, 0]  # (M, S/8, S/8) mask fraction per cell
        pooled = torch.einsum("chw,mhw->mc", level0, small) / small.sum((1, 2)).clamp(min=1e-6)[:, None]
        rows.append({
            "logits": last.logits[0, :nq].float().numpy(),
            "hidden": captured["dec"].hidden[-1][0, :nq].float().numpy(),
            # what the class head reads: the decoder feature plus, with region features, the query's own region
            "head_input": (captured["dec"].hidden[-1][0, :nq] + (0 if hook_region is None else
                                                                  captured["region"][0, :nq])).float().numpy(),
            "iou": _iou_matrix(masks, gt_masks),
            "labels": np.array([text_index[a.text] for _, a in gts]),
            "sizes": [(a.extra.get("attributes") or {}).get("size", "stuff") for _, a in gts],
            "gt_masks": gt_masks.reshape(-1, h, w),
            "memory_in_mask": pooled.numpy(),
            "interm_boxes": None if out.interm is None else out.interm.boxes[0].float().numpy(),
            "num_learnable": out.num_learnable,
            "probs": last.logits[0, :nq].float().sigmoid().numpy(),
            "pred_masks": masks.reshape(nq, h, w),
        })
    for h in (hook, hook_enc, hook_region):
        if h is not None:
            h.remove()
    return rows


@torch.no_grad()
def model_report(model, rows: list[dict], probe_rows: list[dict]) -> dict:
    nthing = len(THING_SHAPES)
    found = {n: [0, 0] for n in NAMES}  # name -> [found, total]
    named = {n: 0 for n in NAMES}
    by_size = {}
    confusion = np.zeros((nthing, len(NAMES)), int)
    qtype = {"learnable": 0, "conditional": 0}
    right_logit = {"thing": [], "stuff": []}
    wrong_logit = {"thing": [], "stuff": []}
    for r in rows:
        for m, label in enumerate(r["labels"]):
            name = NAMES[label]
            kind = "thing" if label < nthing else "stuff"
            found[name][1] += 1
            size = r["sizes"][m]
            by_size.setdefault(size, [0, 0, 0])[1] += 1
            q = int(r["iou"][:, m].argmax())
            if r["iou"][q, m] <= 0.5:
                continue
            found[name][0] += 1
            by_size[size][0] += 1
            pred = int(r["logits"][q].argmax())
            named[name] += int(pred == label)
            by_size[size][2] += int(pred == label)
            right_logit[kind].append(float(r["logits"][q, label]))
            wrong_logit[kind].append(float(np.delete(r["logits"][q], label).max()))
            if kind == "thing":
                confusion[label, pred] += 1
                qtype["learnable" if q < r["num_learnable"] else "conditional"] += 1
    head = model.class_head
    stats = lambda v: {"mean": round(float(np.mean(v)), 2), "p10": round(float(np.percentile(v, 10)), 2),  # noqa: E731
                       "p90": round(float(np.percentile(v, 90)), 2)} if v else None
    report = {
        "recall_any_name_iou50": {n: round(f / max(t, 1), 3) for n, (f, t) in found.items()},
        "named_correctly_given_found": {n: round(named[n] / max(found[n][0], 1), 3) for n in NAMES},
        "things": {"gt": sum(found[n][1] for n in THING_SHAPES), "found": sum(found[n][0] for n in THING_SHAPES),
                   "named": sum(named[n] for n in THING_SHAPES)},
        "stuff": {"gt": sum(found[n][1] for n in STUFF_CLASSES), "found": sum(found[n][0] for n in STUFF_CLASSES),
                  "named": sum(named[n] for n in STUFF_CLASSES)},
        "by_size_found_named": {k: {"gt": v[1], "found": v[0], "named": v[2]} for k, v in by_size.items()},
        "confusion_things_rows_gt_cols_argmax": {"cols": NAMES,
                                                 "rows": {n: " ".join(map(str, confusion[i].tolist())) for i, n in enumerate(THING_SHAPES)}},
        "class_head": {"logit_scale_exp": round(float(head.logit_scale.clamp(max=np.log(100)).exp()), 3), "bias": round(float(head.bias), 3)},
        "logit_right_name": {k: stats(v) for k, v in right_logit.items()},
        "logit_best_wrong_name": {k: stats(v) for k, v in wrong_logit.items()},
        "things_found_by_query_type": qtype,
    }
    if model.conditional_queries is not None:
        ch = model.conditional_queries.class_head
        report["conditional_class_head"] = {"logit_scale_exp": round(float(ch.logit_scale.exp()), 3),
                                            "bias": round(float(ch.bias), 3)}
        on_thing, total, things_covered, things_total = 0, 0, 0, 0
        for r in rows:
            boxes = r["interm_boxes"]  # (K, 4) cxcywh of the selected proposals
            h, w = r["gt_masks"].shape[1:]
            cx = np.clip((boxes[:, 0] * w).astype(int), 0, w - 1)
            cy = np.clip((boxes[:, 1] * h).astype(int), 0, h - 1)
            thing_idx = np.nonzero(r["labels"] < nthing)[0]
            hit = np.zeros(len(boxes), bool)
            for m in thing_idx:
                inside = r["gt_masks"][m][cy, cx]
                hit |= inside
                things_covered += int(inside.any())
            on_thing += int(hit.sum())
            total += len(boxes)
            things_total += len(thing_idx)
        report["conditional_proposals"] = {
            "fraction_of_K_centred_on_a_thing": round(on_thing / max(total, 1), 3),
            "fraction_of_things_with_a_proposal_centre_inside": round(things_covered / max(things_total, 1), 3)}
    report["linear_probe"] = linear_probe(model, probe_rows)
    return report


def _features(model, rows, nthing):
    x, xi, y, group = [], [], [], []
    for gi, r in enumerate(rows):
        for m, label in enumerate(r["labels"]):
            if label >= nthing:
                continue
            q = int(r["iou"][:, m].argmax())
            if r["iou"][q, m] <= 0.5:
                continue
            x.append(r["hidden"][q])
            xi.append(r["head_input"][q])
            y.append(label)
            group.append(gi)
    x = np.stack(x) if x else np.zeros((0, model.cfg.hidden_dim), np.float32)
    xi = np.stack(xi) if xi else np.zeros((0, model.cfg.hidden_dim), np.float32)
    with torch.no_grad():
        head = model.class_head
        xp = F.normalize(head.proj(head.norm(torch.from_numpy(xi))), dim=-1).numpy()
    return x, xi, xp, np.array(y), np.array(group)


def linear_probe(model, rows) -> dict:
    """Logistic regression on the decoder features of the best-IoU query of each found thing -> its shape; the
    first 70% of scenes train, the rest test. Compared with the class head's own argmax over the 9 shape names."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))  # noqa: E731

    nthing = len(THING_SHAPES)
    x, xi, xp, y, group = _features(model, rows, nthing)
    if len(y) < 20:
        return {"samples": int(len(y)), "note": "too few found things"}
    split = group < int(0.7 * len(rows))
    out = {"samples_train": int(split.sum()), "samples_test": int((~split).sum()), "chance": round(1 / nthing, 3)}
    probes = [("decoder_feature", x), ("class_head_projection", xp)]
    if model.region_features is not None:
        probes.append(("class_head_input_with_region", xi))
    for name, feats in probes:
        clf = probe()
        clf.fit(feats[split], y[split])
        out[f"probe_acc_{name}"] = round(float(clf.score(feats[~split], y[~split])), 3)
    xm, ym, gm = [], [], []
    for gi, r in enumerate(rows):
        for m, label in enumerate(r["labels"]):
            if label < nthing:
                xm.append(r["memory_in_mask"][m]), ym.append(label), gm.append(gi)
    xm, ym, gm = np.stack(xm), np.array(ym), np.array(gm)
    crops, cy = [], []  # the predicted mask of the best-IoU query, cropped to its box, 16 x 16: is shape visible?
    for gi, r in enumerate(rows):
        for m, label in enumerate(r["labels"]):
            q = int(r["iou"][:, m].argmax())
            if label >= nthing or r["iou"][q, m] <= 0.5:
                continue
            ys, xs = np.nonzero(r["pred_masks"][q])
            crop = r["pred_masks"][q][ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
            crops.append(cv2.resize(crop, (16, 16), interpolation=cv2.INTER_AREA).reshape(-1))
            cy.append((label, gi))
    crops, cy = np.stack(crops), np.array(cy)
    sc = cy[:, 1] < int(0.7 * len(rows))
    clf = probe().fit(crops[sc], cy[sc, 0])
    out["probe_acc_predicted_mask_crop_16x16"] = round(float(clf.score(crops[~sc], cy[~sc, 0])), 3)
    sm = gm < int(0.7 * len(rows))
    clf = probe().fit(xm[sm], ym[sm])
    out["probe_acc_encoder_memory_pooled_in_gt_mask"] = round(float(clf.score(xm[~sm], ym[~sm])), 3)
    with torch.no_grad():
        text = model.encode_text(list(THING_SHAPES)).numpy()
    out["head_acc_among_shapes"] = round(float(((xp[~split] @ text.T).argmax(1) == y[~split]).mean()), 3)
    sims = text @ text.T
    raw = F.normalize(model.text_encoder.encode(list(THING_SHAPES)).float(), dim=-1).numpy() @ \
        F.normalize(model.text_encoder.encode(list(THING_SHAPES)).float(), dim=-1).numpy().T
    out["raw_text_cos_mean_offdiag"] = round(float(raw[~np.eye(nthing, dtype=bool)].mean()), 3)
    out["raw_text_cos_max_offdiag"] = round(float(raw[~np.eye(nthing, dtype=bool)].max()), 3)
    out["projected_text_cos_mean_offdiag"] = round(float(sims[~np.eye(nthing, dtype=bool)].mean()), 3)
    out["projected_text_cos_max_offdiag"] = round(float(sims[~np.eye(nthing, dtype=bool)].max()), 3)
    return out


def mask_ap(rows) -> dict:
    """Mask AP of things: every matched query is a detection with label = its best shape name, score = its prob."""
    from qmn.data.sample import Annotation
    from qmn.metrics import CocoAP
    from qmn.structures import Segment

    nthing = len(THING_SHAPES)
    ap = CocoAP(list(THING_SHAPES))
    for r in rows:
        gt = [Annotation.from_mask(NAMES[l], r["gt_masks"][m]) for m, l in enumerate(r["labels"]) if l < nthing]
        probs = r["probs"][:, :nthing]
        order = np.argsort(-probs.max(1))[:100]
        dets = []
        for q in order:
            mask = r["pred_masks"][q]
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
            c = int(probs[q].argmax())
            dets.append(Segment(label=THING_SHAPES[c], score=float(probs[q, c]), mask=mask, box=box, query_type="matched"))
        ap.add(r["gt_masks"].shape[1:], gt, dets)
    res = ap.result("segm")
    return {k: round(100 * v, 1) if v == v else None for k, v in res.__dict__.items()}


def audit_batches(num_batches: int, size: int, seed: int) -> dict:
    """Build training batches as the trainer does (spec mixing the synthetic tasks with the default ratios), with
    batch-wide negatives (the old rule) and per-image negatives (`negatives_per_image`, the fix)."""
    import dataclasses

    from qmn.config import get_preset
    from qmn.data.synth import generate
    from train.data import make_loader, resolve_data

    tmp = Path(tempfile.mkdtemp(prefix="qmn_audit_"))
    generate(tmp / "synth", 40, seed=777, size=size, variant="all")
    spec = {"datasets": [
        {"name": "synth-panoptic", "path": "synth/panoptic", "task": "panoptic", "ratio": 3},
        {"name": "synth-semantic", "path": "synth/panoptic", "task": "semantic", "ratio": 1},
        {"name": "synth-referring", "path": "synth/referring", "task": "referring", "ratio": 2},
        {"name": "synth-foreground", "path": "synth/foreground", "task": "foreground", "ratio": 0.5},
        {"name": "synth-detection", "path": "synth/detection", "task": "detection", "ratio": 0.5}]}
    (tmp / "spec.json").write_text(json.dumps(spec))
    data = resolve_data(tmp / "spec.json")
    shapes = set(THING_SHAPES)
    result = {}
    for rule, per_image in (("batch_wide_negatives_before", False), ("per_image_negatives_after", True)):
        cfg = dataclasses.replace(get_preset("tiny"), negatives_per_image=per_image)
        loader = make_loader(data, cfg, 4, seed, 0, 1, 0, num_batches, 0)
        stats = {"batches": 0, "thing_targets": 0, "labelled_with_shape_name": 0, "labelled_phrase_or_foreground": 0,
                 "trained_as_negative_of_own_shape_name": 0, "texts_per_batch_mean": 0.0, "area_lt_64px": 0,
                 "area_lt_256px": 0}
        for _, batch in loader:
            stats["batches"] += 1
            texts = batch.texts
            stats["texts_per_batch_mean"] += len(texts)
            for t in batch.targets:
                valid = t.get("text_valid", torch.ones(len(texts), dtype=torch.bool)).tolist()
                negatives = {x for x, v in zip(texts, valid) if v and x in shapes}
                for label, mask, has_mask in zip(t["labels"].tolist(), t["masks"], t["has_mask"].tolist()):
                    text = texts[label]
                    if text in STUFF_CLASSES:
                        continue
                    stats["thing_targets"] += 1
                    if has_mask:
                        area = int(mask.sum())
                        stats["area_lt_64px"] += int(area < 64)
                        stats["area_lt_256px"] += int(area < 256)
                    if text in shapes:
                        stats["labelled_with_shape_name"] += 1
                        continue
                    stats["labelled_phrase_or_foreground"] += 1
                    words = [w for w in text.split() if w in shapes]  # a phrase's first shape word is its referent
                    own = words[:1] if words else sorted(shapes)  # "foreground": it is one of the shapes
                    stats["trained_as_negative_of_own_shape_name"] += int(bool(set(own) & negatives))
        stats["texts_per_batch_mean"] = round(stats["texts_per_batch_mean"] / max(stats["batches"], 1), 1)
        result[rule] = stats
    return result


def name_separation_drift(model, num_batches: int, seed: int) -> dict:
    """Does one training gradient pull the projected shape names apart or together? For each rule, the first-order
    change of their mean pairwise cosine under a small SGD step of the whole loss on real mixed training batches
    (negative = the step separates the names)."""
    import dataclasses

    from qmn.data.synth import generate
    from train.data import make_loader, resolve_data

    tmp = Path(tempfile.mkdtemp(prefix="qmn_grad_"))
    generate(tmp / "synth", 20, seed=778, size=model.cfg.image_size, variant="all")
    spec = {"datasets": [{"name": n, "path": f"synth/{v}", "task": t, "ratio": r} for n, v, t, r in (
        ("p", "panoptic", "panoptic", 3), ("s", "panoptic", "semantic", 1), ("r", "referring", "referring", 2),
        ("f", "foreground", "foreground", 0.5), ("d", "detection", "detection", 0.5))]}
    (tmp / "spec.json").write_text(json.dumps(spec))
    data = resolve_data(tmp / "spec.json")
    emb = model.text_encoder.encode(list(THING_SHAPES)).to(model.text_proj.weight)
    off = ~torch.eye(len(THING_SHAPES), dtype=torch.bool)

    def mean_cos():
        t = F.normalize(model.text_proj(emb), dim=-1)
        return (t @ t.T)[off].mean()

    model.zero_grad()
    model.text_proj.weight.grad = None
    g_cos = torch.autograd.grad(mean_cos(), [model.text_proj.weight, model.text_proj.bias])
    out = {}
    model.train()
    for rule, per_image in (("batch_wide_negatives_before", False), ("per_image_negatives_after", True)):
        cfg = dataclasses.replace(model.cfg, negatives_per_image=per_image)
        drift = []
        for _, batch in make_loader(data, cfg, 4, seed, 0, 1, 0, num_batches, 0):
            torch.manual_seed(0)
            loss = model.compute_loss(batch)
            class_terms = sum(v * model.criterion.weight_dict[k] for k, v in loss.items() if k.startswith("loss_class"))
            g = torch.autograd.grad(class_terms, [model.text_proj.weight, model.text_proj.bias])
            drift.append(-float(sum((a * b).sum() for a, b in zip(g, g_cos))))  # d cos along -grad
        out[rule] = {"mean_drift_per_unit_lr": round(float(np.mean(drift)), 4),
                     "batches_separating": int(sum(d < 0 for d in drift)), "batches": len(drift)}
    model.eval()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "assets" / "qmn_tiny.safetensors"))
    p.add_argument("--seed", type=int, default=9001, help="validation seed (never trained on)")
    p.add_argument("--num-images", type=int, default=50)
    p.add_argument("--probe-images", type=int, default=100, help="scenes for the linear probe (>= --num-images)")
    p.add_argument("--audit-batches", type=int, default=150, help="0 skips the training-batch audit")
    p.add_argument("--gradient-batches", type=int, default=0,
                   help="> 0: also measure whether the class-loss gradient separates the projected shape names")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    model = load_model(args.checkpoint).eval()
    scenes = SyntheticScenes(max(args.num_images, args.probe_images), args.seed, model.cfg.image_size, "panoptic")
    rows = run_model(model, scenes, max(args.num_images, args.probe_images))
    report = {"checkpoint": os.path.relpath(args.checkpoint, ROOT), "seed": args.seed, "num_images": args.num_images}
    report.update(model_report(model, rows[:args.num_images], rows))
    report["thing_mask_ap"] = mask_ap(rows[:args.num_images])
    if args.audit_batches:
        report["training_batch_audit"] = audit_batches(args.audit_batches, model.cfg.image_size, 0)
    if args.gradient_batches:
        report["name_separation_drift"] = name_separation_drift(model, args.gradient_batches, 0)
    report["seconds"] = round(time.time() - started, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
