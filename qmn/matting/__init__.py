"""Matting refinement (paper §4.4): mask -> trimap -> soft alpha (AEMatter-style network or pymatting) -> RGBA."""
from qmn.matting.checkpoint import load_matting_model, save_matting_model
from qmn.matting.foreground import cutout, estimate_foreground
from qmn.matting.network import MattingConfig, MattingNet
from qmn.matting.refine import METHODS, alpha_from_trimap, refine
from qmn.matting.trimap import make_trimap

__all__ = ["refine", "alpha_from_trimap", "cutout", "estimate_foreground", "make_trimap", "load_matting_model",
           "save_matting_model", "MattingConfig", "MattingNet", "METHODS"]
