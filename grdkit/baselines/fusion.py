"""Language fusion inside the visual encoder: LAVT's pixel-word attention module (PWAM; Yang et
al., "LAVT: Language-Aware Vision Transformer for Referring Image Segmentation", CVPR 2022, §3.2,
eq. 1-5), shared by GRSer (``fusion="pwam"``) and MABP (``fusion="pwam"``, MABP §III: "we adapt
the feature extractor to encode both the images and reference expressions", following LAVT /
ReLA).

What stays different from LAVT: timm backbones run whole, so the fused features are not fed back
into the next encoder stage; language enters after each stage, not between them.
"""

from __future__ import annotations

import torch
from torch import nn


class PWAM(nn.Module):
    """LAVT's pixel-word attention module (Yang et al., CVPR 2022, §3.2, eq. 1-5), one head.

    Visual ``(M, C, H, W)`` and words ``(M, T, C_l)`` with mask ``(M, T)`` -> fused
    ``(M, C, H, W)``: G = softmax_T(Q K^T / sqrt(C)) V_w (pixel-to-word attention, padding
    masked), F = (W_m V) * (W_w G), gate = tanh(MLP(F)), output V + gate * F.
    """

    def __init__(self, c_vis: int, c_lang: int):
        super().__init__()
        self.q = nn.Conv2d(c_vis, c_vis, 1)
        self.k = nn.Linear(c_lang, c_vis)
        self.v = nn.Linear(c_lang, c_vis)
        self.vis = nn.Sequential(nn.Conv2d(c_vis, c_vis, 1), nn.GELU())
        self.lang = nn.Sequential(nn.Conv2d(c_vis, c_vis, 1), nn.GELU())
        self.gate = nn.Sequential(nn.Conv2d(c_vis, c_vis, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(c_vis, c_vis, 1), nn.Tanh())

    def forward(self, x: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m, c, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)                     # (M, HW, C)
        att = q @ self.k(words).transpose(1, 2) / c ** 0.5           # (M, HW, T)
        att = att.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        g = (att @ self.v(words)).transpose(1, 2).reshape(m, c, h, w)
        fused = self.vis(x) * self.lang(g)
        return x + self.gate(fused) * fused
