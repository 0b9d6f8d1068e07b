"""Region features (qmn/region_features.py): the class head sees each query's own box and mask, pooled as RoIAlign
does; they start at zero (a model is unchanged until it trains), they never send the class loss into masks or boxes,
and they let a class be learned that only the mask's outline tells apart."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from qmn import QMNConfig, QueryMeldNet, get_preset, load_model
from qmn.box_ops import box_cxcywh_to_xyxy
from qmn.heads import ClassHead
from qmn.point_sampling import box_grid, box_sample
from qmn.region_features import RegionFeatures


def test_box_sample_pools_as_roi_align_inside_the_map():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.3], [0.5, 0.5, 0.6, 0.5]], [[0.6, 0.3, 0.1, 0.2], [0.45, 0.55, 0.3, 0.7]]])
    xyxy = box_cxcywh_to_xyxy(boxes)
    ours = F.avg_pool2d(box_sample(x, box_grid(xyxy, 10)).flatten(0, 1), 2)  # (B*Q, C, 5, 5)
    reference = roi_align(x, [xyxy[i] * 32 for i in range(2)], 5, aligned=True, sampling_ratio=2)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_zero_start_detached_inputs_and_old_configs(micro_cfg):
    """A model with region features predicts exactly what the same weights do without them; the class loss gives
    no gradient to the masks or boxes it reads; a config from before (no field) builds none, the presets do."""
    torch.manual_seed(0)
    with_region = QueryMeldNet(micro_cfg).eval()
    without = QueryMeldNet(dataclasses.replace(micro_cfg, region_pool_size=0)).eval()
    missing, unexpected = without.load_state_dict(with_region.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("region_features.") for k in unexpected)
    image = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = with_region(image, ["circle", "sky"]), without(image, ["circle", "sky"])
    for la, lb in zip(a.layers, b.layers):
        torch.testing.assert_close(la.logits, lb.logits)

    region = with_region.region_features
    nn_init = torch.Generator().manual_seed(1)
    with torch.no_grad():
        region.embed.layers[-1].weight.copy_(torch.randn(region.embed.layers[-1].weight.shape, generator=nn_init))
    masks = torch.randn(1, 4, 32, 32, requires_grad=True)
    boxes = torch.rand(1, 4, 4, requires_grad=True)
    pixels = torch.randn(1, region.reduce.out_channels, 32, 32, requires_grad=True)
    region(boxes, masks, pixels).sum().backward()
    assert masks.grad is None and boxes.grad is None and pixels.grad.abs().sum() > 0

    old = {k: v for k, v in get_preset("tiny").to_dict().items() if k != "region_pool_size"}
    assert QMNConfig.from_dict(old).region_pool_size == 0
    assert get_preset("tiny").region_pool_size > 0 and get_preset("base").region_pool_size > 0


def test_saved_model_with_region_features_round_trips(micro_model, tmp_path):
    micro_model.save(tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.region_features is not None
    image = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, ["a"]).layers[-1].logits, micro_model(image, ["a"]).layers[-1].logits)


def _shape_masks(n: int, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n mask logits of discs (label 0) or squares (label 1) of random size and place, with their boxes."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    masks, boxes, labels = [], [], []
    for i in range(n):
        r = rng.uniform(4, 9)
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        label = i % 2
        inside = (np.maximum(abs(xx - cx), abs(yy - cy)) < r) if label else ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)
        masks.append(np.where(inside, 8.0, -8.0))
        boxes.append([cx / size, cy / size, 2 * r / size, 2 * r / size])
        labels.append(label)
    return (torch.tensor(np.array(masks), dtype=torch.float32)[None], torch.tensor(boxes, dtype=torch.float32)[None],
            torch.tensor(labels))


def test_a_class_only_the_outline_tells_apart_is_learned_with_region_features_only():
    """Identical query features and identical flat pixel features: only the query's own mask differs (disc vs
    square). The class head alone cannot do better than chance; with region features it names them."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    train_masks, train_boxes, train_labels = _shape_masks(64, 32, rng)
    test_masks, test_boxes, test_labels = _shape_masks(32, 32, rng)
    dim = 32
    text = F.normalize(torch.randn(1, 2, dim), dim=-1)  # "disc", "square"
    queries = torch.zeros(1, 64, dim)
    pixels = torch.zeros(1, 8, 32, 32)

    def accuracy(use_region: bool) -> float:
        torch.manual_seed(0)
        head, region = ClassHead(dim), RegionFeatures(8, dim, 7, channels=8)
        params = list(head.parameters()) + (list(region.parameters()) if use_region else [])
        opt = torch.optim.Adam(params, lr=3e-3)

        def logits(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
            q = queries[:, : masks.shape[1]]
            return head(q + region(boxes, masks, pixels) if use_region else q, text)[0]  # (Q, 2)

        for _ in range(150):
            loss = F.cross_entropy(logits(train_masks, train_boxes), train_labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float((logits(test_masks, test_boxes).argmax(1) == test_labels).float().mean())

    assert accuracy(use_region=False) == 0.5
    assert accuracy(use_region=True) >= 0.9
