"""What `QueryMeldNet.forward` returns: per-layer head outputs over the query layout [learnable | conditional | prompted],
typed so the criterion and the predictor read named fields, never dict keys."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class LayerOutputs:
    """One prediction per query: a decoder layer's, or the encoder proposals' (which have no masks)."""

    logits: Tensor  # (B, Q, T) class logits, one per prompt
    boxes: Tensor  # (B, Q, 4) cxcywh in [0, 1] of the padded square
    masks: Tensor | None  # (B, Q, S/4, S/4) mask logits; None for the encoder proposals

    def select(self, queries: slice) -> "LayerOutputs":
        """The same outputs for a slice of the queries (dim 1)."""
        return LayerOutputs(self.logits[:, queries], self.boxes[:, queries],
                            None if self.masks is None else self.masks[:, queries])


@dataclass
class QueryMeldOutput:
    layers: list[LayerOutputs]  # per decoder layer, over all queries; the last layer is the prediction
    interm: LayerOutputs | None  # the encoder proposals the conditional queries came from (deep supervision)
    num_learnable: int
    num_conditional: int
    num_prompted: int  # box / click prompts, after the matched queries
    num_denoising: int = 0  # training only: noised ground truth, after the prompted queries (`qmn.denoising`)

    @property
    def matched(self) -> slice:
        """Learnable + conditional queries: the ones the Hungarian matcher assigns, as one set."""
        return slice(0, self.num_learnable + self.num_conditional)

    @property
    def prompted(self) -> slice:
        """Prompted queries: each is assigned to its own object, no matching."""
        start = self.num_learnable + self.num_conditional
        return slice(start, start + self.num_prompted)

    @property
    def denoising(self) -> slice:
        """Denoising queries (training only): each reconstructs its own object."""
        return slice(self.num_learnable + self.num_conditional + self.num_prompted, None)

    def query_types(self) -> list[str]:
        """Per query: "learnable" | "conditional" | "prompted" | "denoising" (kept on every predicted segment)."""
        return (["learnable"] * self.num_learnable + ["conditional"] * self.num_conditional
                + ["prompted"] * self.num_prompted + ["denoising"] * self.num_denoising)
