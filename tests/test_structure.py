"""Contracts of the model library's structure: one matching over both query types, the dual-query attention reading the
pre-update tensors, post-processing rules on hand-made raw outputs, query_mode as the one source of group sizes, the
explicit weight_dict, and the shared text encoder. Tiny, seeded, CPU."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from qmn import QMNConfig, QueryMeldNet, get_preset, load_model
from qmn.batching import collate
from qmn.data.sample import Annotation, Sample
from qmn.inference import RawOutput, instances, panoptic, postprocess
from qmn.losses import SetCriterion
from qmn.outputs import LayerOutputs, QueryMeldOutput
from qmn.predictor import user_prompts
from qmn.queries import DualQueryCrossAttention

ASSET = Path(__file__).resolve().parents[1] / "assets" / "qmn_tiny.safetensors"


def raw_output(probs: list[list[float]], masks: list[np.ndarray]) -> RawOutput:
    """A hand-made 16 x 16 image: mask logits +10 inside each boolean mask, -10 outside (stride 1, no resize)."""
    logits = torch.stack([torch.where(torch.from_numpy(m), 10.0, -10.0) for m in masks])
    q = len(masks)
    return RawOutput(torch.tensor(probs), logits, torch.full((q, 4), 0.5), ["learnable"] * q, 16, (16, 16), (16, 16))


def columns(start: int, stop: int) -> np.ndarray:
    m = np.zeros((16, 16), bool)
    m[:, start:stop] = True
    return m


# ---------------------------------------------------------------------------------------------- matching
def test_one_matching_over_both_query_types(micro_cfg):
    """A target goes to whichever query fits it best, learnable or conditional: no type split (unlike OpenSeeD)."""
    criterion = SetCriterion(micro_cfg)
    seen = []
    match = criterion.matcher.forward
    criterion.matcher.forward = lambda *a: seen.append(match(*a)) or seen[-1]
    n, k, t = 3, 4, 2
    target = {"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.7, 0.7, 0.3, 0.3]]),
              "masks": torch.zeros(2, 8, 8, dtype=torch.bool), "has_mask": torch.zeros(2, dtype=torch.bool)}

    def run(best_for_second: int) -> set[int]:
        logits = torch.full((1, n + k, t), -5.0)
        boxes = torch.full((1, n + k, 4), 0.5)
        for q, label in ((0, 0), (best_for_second, 1)):
            logits[0, q, label] = 5.0
            boxes[0, q] = target["boxes"][label]
        layer = LayerOutputs(logits, boxes, torch.zeros(1, n + k, 8, 8))
        seen.clear()
        criterion(QueryMeldOutput([layer], None, n, k, 0), [target])
        (rows, cols), = seen[0]
        return {int(r) for r, c in zip(rows, cols)}

    assert run(n + 1) == {0, n + 1}  # one learnable, one conditional query
    assert run(1) == {0, 1}  # both targets on learnable queries
    assert run(n + 2) - {0} == {n + 2}


def test_dual_query_attention_reads_the_tensors_from_before_either_update():
    torch.manual_seed(0)
    n, k, p, dim = 3, 4, 2, 16
    dqa = DualQueryCrossAttention(dim, 2).eval()
    for norm in (dqa.norm_learnable, dqa.norm_conditional):  # non-trivial norms: any mix-up shows
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    tgt, pos = torch.randn(2, n + k + p, dim), torch.randn(2, n + k + p, dim)
    ql, pl, qc, pc = tgt[:, :n], pos[:, :n], tgt[:, n:], pos[:, n:]
    with torch.no_grad():
        out = dqa(tgt, pos, n, k)
        # learnable side reads only the matched conditional queries; conditional (+ prompted) side reads the
        # learnable queries as they were before their own update
        lc = dqa.learnable_from_conditional(ql + pl, qc[:, :k] + pc[:, :k], qc[:, :k], need_weights=False)[0]
        cl = dqa.conditional_from_learnable(qc + pc, ql + pl, ql, need_weights=False)[0]
        expected = torch.cat([dqa.norm_learnable(ql + lc), dqa.norm_conditional(qc + cl)], 1)
        updated_l = expected[:, :n]
        wrong = dqa.norm_conditional(qc + dqa.conditional_from_learnable(qc + pc, updated_l + pl, updated_l,
                                                                         need_weights=False)[0])
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out[:, n:], wrong, atol=1e-3)  # the sequential (post-update) reading differs


# ---------------------------------------------------------------------------------------------- post-processing
@pytest.mark.parametrize("start, kept", [(8, False), (9, True)])
def test_panoptic_drops_a_segment_that_won_under_80_percent_of_its_mask(start, kept):
    """q0 (0.9) owns columns 0-9; q1 (0.8) has columns start-15 and loses the overlap: it keeps 6 of 8 (0.75, dropped)
    or 6 of 7 (0.86, kept) of its pixels. q2 is under the threshold."""
    raw = raw_output([[0.9, 0.0], [0.0, 0.8], [0.2, 0.0]], [columns(0, 10), columns(start, 16), columns(0, 16)])
    segments, pan = panoptic(raw, ["a", "b"], threshold=0.3)
    assert [s.label for s in segments] == (["a", "b"] if kept else ["a"])
    assert (pan[:, :10] == 1).all()
    assert (pan[:, 10:] == (2 if kept else 0)).all()
    for s in segments:
        assert np.array_equal(pan == s.id, s.mask)


def test_instance_thresholds_apply_to_class_score_then_to_mask_weighted_score():
    half = np.zeros((16, 16), bool)
    half[:8] = True
    raw = raw_output([[0.9, 0.8], [0.5, 0.0], [0.7, 0.0]], [half, half, half])
    raw.mask_logits[2] = torch.where(torch.from_numpy(half), 0.2, -10.0)  # sigmoid 0.55: mask score drags 0.7 under
    segments = instances(raw, ["a", "b"], threshold=0.6)
    assert [(s.query_index, s.label) for s in segments] == [(0, "a"), (0, "b")]  # one query may answer two prompts
    assert segments[0].score == pytest.approx(0.9, abs=1e-3) and segments[1].score == pytest.approx(0.8, abs=1e-3)
    assert [s.query_index for s in instances(raw, ["a", "b"], threshold=0.3)] == [0, 0, 2, 1]


def test_semantic_marks_pixels_no_class_reaches_as_minus_one():
    raw = raw_output([[0.9, 0.0], [0.0, 0.6]], [columns(0, 6), columns(6, 10)])
    pred = postprocess(raw, "semantic", ["a", "b"], threshold=0.3)
    assert (pred.semantic[:, :6] == 0).all() and (pred.semantic[:, 6:10] == 1).all() and (pred.semantic[:, 10:] == -1).all()
    assert [s.label for s in pred.segments] == ["a", "b"]
    everything = postprocess(raw, "semantic", ["a", "b"], threshold=0.0)
    assert everything.semantic.min() >= 0  # threshold 0: every pixel gets its best class


# ---------------------------------------------------------------------------------------------- config and model
def test_query_mode_is_the_one_source_of_the_group_sizes(micro_cfg):
    small = dict(image_size=128, enc_layers=1, dec_layers=1, hidden_dim=32, ffn_dim=64, mask_dim=32, num_mask_points=64)
    learnable = get_preset("tiny", query_mode="learnable", **small)
    assert (learnable.num_learnable, learnable.num_conditional) == (80, 0)
    conditional = dataclasses.replace(micro_cfg, query_mode="conditional")
    assert (conditional.num_learnable, conditional.num_conditional) == (0, 24)
    with pytest.raises(ValueError, match="needs both groups"):
        QMNConfig(num_conditional=0)
    torch.manual_seed(0)
    model = QueryMeldNet(learnable).eval()
    assert model.conditional_queries is None and not any(k.startswith("conditional_queries.") for k in model.state_dict())
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 128, 128), ["a", "b"])
    assert (out.num_learnable, out.num_conditional, out.interm) == (80, 0, None)
    assert out.layers[-1].logits.shape == (1, 80, 2) and set(out.query_types()) == {"learnable"}


def test_retired_config_fields_are_dropped_and_the_bundled_model_loads(micro_cfg):
    old = {**micro_cfg.to_dict(), "text_dim": 384, "num_feature_levels": 4}
    assert QMNConfig.from_dict(old) == micro_cfg
    if not ASSET.is_file():
        pytest.skip("bundled checkpoint absent")
    model = load_model(ASSET)
    assert (model.cfg.query_mode, model.cfg.num_learnable, model.cfg.num_conditional) == ("meld", 20, 60)
    assert not any(str(d["path"]).startswith("/") for d in model.record.get("data", []))


def test_weight_dict_names_every_loss_term_and_weights_the_total(micro_cfg):
    cfg = dataclasses.replace(micro_cfg, num_prompted_train=2)
    torch.manual_seed(0)
    model = QueryMeldNet(cfg).train()
    yy, xx = np.mgrid[:128, :128]
    disc = (xx - 40) ** 2 + (yy - 60) ** 2 < 15 ** 2
    image = np.full((128, 128, 3), 90, np.uint8)
    image[disc] = 230
    batch = collate([Sample(image, [Annotation.from_mask("disc", disc), Annotation.from_mask("ground", ~disc)], "panoptic")],
                    cfg, np.random.default_rng(0))
    losses = model.compute_loss(batch)
    terms = {k: v for k, v in losses.items() if k != "loss"}
    weights = model.criterion.weight_dict
    for suffix in ("", "_0", "_interm", "_prompt", "_prompt_0"):  # 2 decoder layers: last + aux 0
        assert {f"loss_{n}{suffix}" for n in ("class", "bbox", "giou")} <= set(terms), suffix
    assert set(terms) <= set(weights)
    assert losses["loss"].item() == pytest.approx(sum(weights[k] * v.item() for k, v in terms.items()), rel=1e-5)


def test_frozen_text_encoder_is_shared_by_reference_not_owned(micro_cfg, micro_model):
    other = QueryMeldNet(micro_cfg)
    assert other.text_encoder is micro_model.text_encoder
    assert not any(k.startswith("text_encoder.") for k in other.state_dict())
    before = next(other.text_encoder.parameters()).dtype
    other.to(torch.float64)  # moving one model leaves the shared encoder (and so every other model) alone
    assert next(micro_model.text_encoder.parameters()).dtype == before
    assert other.encode_text(["a"]).dtype == torch.float64


def test_box_and_click_geometry_become_normalised_prompted_queries():
    prompts = user_prompts([[0, 0, 50, 100]], [(25, 50, True), (150, 150, True), (160, 160, False)], scale=0.5, size=100)
    assert prompts.from_box.tolist() == [[True, False]]  # the box, then one query from the clicks outside it
    assert torch.allclose(prompts.boxes[0, 0], torch.tensor([0.125, 0.25, 0.25, 0.5]))
    assert torch.allclose(prompts.boxes[0, 1, :2], torch.tensor([0.75, 0.75]))  # centred on the first positive click
    assert prompts.point_labels[0].tolist() == [[1, -1], [1, 0]]
    assert user_prompts(None, [(1, 1, False)], 1.0, 100) is None  # a lone negative click selects nothing
