"""LTS: Locate-Then-Segment (Jing et al., "Locate then Segment: A Strong Pipeline for Referring
Image Segmentation", CVPR 2021), reimplemented from the paper (no official code exists).

Equations (paper numbering) and the choices the paper leaves open:

* Visual features F_v1, F_v2, F_v3 at 1/32, 1/16, 1/8 (:class:`~.encoders.VisionEncoder`);
  sentence feature f_text (:class:`~.encoders.TextEncoder`, masked mean of token states; the
  paper averages bi-GRU states over GloVe, ``text_gru=True`` adds the bi-GRU).
* Fusion (eq. 5-7), ``fusion="paper"`` (default): text enters at the coarsest level only,
  F_m1 = g(F_v1 W_v1) * g(f_text W_t), g = LeakyReLU (slope 0.1, choice); then for k = 2, 3,
  F_mk = concat(up2(F_m(k-1)), g(F_vk W_vk)) followed by a linear 1x1 projection back to C
  channels (choice: the paper's W matrices; no 3x3 convolution after the concatenation).
  ``fusion="text-every-level"`` (grdkit 0.1's variant, kept as a named option): text gates every
  level, F_mk = conv3x3(concat(up2(F_m(k-1)), g(F_vk W_vk) * g(f_text W_tk))) with BatchNorm +
  ReLU.
* Localisation by relevance filtering (eq. 8): kernel K = f_text W_k in R^{d_k} (d_k = 1024 in
  the paper), applied as a 1x1 convolution on F_m3 projected to d_k, scaled by 1/sqrt(d_k):
  heatmap H_mask at 1/8 (logits). The transformer-decoder variant (eq. 9) is not implemented.
* Segmentation (eq. 10): concat(F_m3, sigmoid(H_mask)) -> ASPP (rates 6, 12, 18 plus image
  pooling) -> transposed convolution x2 -> P_mask at 1/4 (logits).
* Loss (eq. 11-13): BCE(P_mask, Y_1/4) + 0.1 BCE(H_mask, Y_1/8), the ground truth down-sampled
  by area averaging (soft targets at object borders). Negative (no-target) images train with
  all-zero masks.
* Inference: P_mask up-sampled bilinearly to the image size, threshold 0.25; an image whose mask
  is then empty (or below ``min_pixels``) is predicted no-target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import valid_rows
from .encoders import DEFAULT_TEXT, DEFAULT_VISION, attach_encoders

FUSIONS = ("paper", "text-every-level")


def conv_bn(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al., DeepLab v3): rates 1 (1x1), 6, 12, 18, pool."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn(cin, cout, 1)] +
                                      [conv_bn(cin, cout, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                                  nn.ReLU(inplace=True))
        self.project = conv_bn(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, 1))


class LTS(nn.Module):
    """Locate-Then-Segment; see the module header.

    Args:
        vision, vision_weights: see :class:`~.encoders.VisionEncoder`.
        text: see :class:`~.encoders.TextEncoder`; text_gru: add the bi-GRU.
        width: channels of the fused maps (C). d_k: relevance-filter dimension (paper: 1024).
        train_text: fine-tune the text encoder (default frozen: cheaper on CPU).
        freeze_vision: keep the visual backbone fixed.
        fusion: ``paper`` (eq. 5-7 as written) or ``text-every-level`` (see the module header).
        image_size: S, for backbones built for an input size (Swin).

    Input batch (see :func:`.data.collate`): ``images (B, n, 3, S, S)`` uint8, ``index`` /
    ``group`` (the valid images), ``expression`` (B strings). Output: ``{"p": (M, 1, S/4, S/4),
    "h": (M, 1, S/8, S/8)}`` logits for the M valid images, in row-major (group, image) order.

    Raises:
        ValueError: an unknown ``fusion``.
    """

    name = "lts"

    def __init__(self, vision: str = DEFAULT_VISION, vision_weights="bundled",
                 text: str = DEFAULT_TEXT, text_gru: bool = False, width: int = 256,
                 d_k: int = 1024, train_text: bool = False, freeze_vision: bool = False,
                 fusion: str = "paper", image_size: int | None = None):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}")
        self.fusion = fusion
        attach_encoders(self, vision, vision_weights, text, text_gru, train_text, freeze_vision,
                        image_size)
        c8, c16, c32 = self.vision.channels
        cl, c = self.text.dim, width
        self.act = nn.LeakyReLU(0.1)
        self.v_proj = nn.ModuleList([nn.Conv2d(ch, c, 1) for ch in (c32, c16, c8)])
        levels = 1 if fusion == "paper" else 3
        self.t_proj = nn.ModuleList([nn.Linear(cl, c) for _ in range(levels)])
        if fusion == "paper":
            self.merge = nn.ModuleList([nn.Conv2d(2 * c, c, 1), nn.Conv2d(2 * c, c, 1)])
        else:
            self.merge = nn.ModuleList([conv_bn(2 * c, c), conv_bn(2 * c, c)])
        self.k_text = nn.Linear(cl, d_k)
        self.k_vis = nn.Conv2d(c, d_k, 1)
        self.k_bias = nn.Parameter(torch.zeros(1))
        self.d_k = d_k
        self.aspp = ASPP(c + 1, c)
        self.up = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, stride=2), nn.BatchNorm2d(c // 2),
                                nn.ReLU(inplace=True), nn.Conv2d(c // 2, 1, 1))

    def forward(self, batch: dict) -> dict:
        x = valid_rows(batch, "images")
        t = self.text(batch["expression"])  # a frozen transformer is cached, its GRU trains
        t = t.index_select(0, batch["group"])  # one sentence feature per valid image
        f8, f16, f32 = self.vision(x)           # one backbone call for every image of the step
        fm = None
        for k, fv in enumerate((f32, f16, f8)):
            fused = self.act(self.v_proj[k](fv))
            if k < len(self.t_proj):
                fused = fused * self.act(self.t_proj[k](t))[:, :, None, None]
            if fm is None:
                fm = fused  # eq. 5
            else:  # eq. 6-7
                up = F.interpolate(fm, size=fused.shape[-2:], mode="bilinear",
                                   align_corners=False)
                fm = self.merge[k - 1](torch.cat([up, fused], 1))
        kernel = self.k_text(t)  # eq. 8
        h = (self.k_vis(fm) * kernel[:, :, None, None]).sum(1, keepdim=True) / self.d_k ** 0.5
        h = h + self.k_bias
        p = self.up(self.aspp(torch.cat([fm, torch.sigmoid(h)], 1)))  # eq. 10
        return {"p": p, "h": h}

    @staticmethod
    def loss(out: dict, batch: dict, epoch: int = 0, epochs: int = 1) -> tuple:
        """Eq. 11-13; returns (loss, {"bce_p", "bce_h"}: detached 0-d tensors)."""
        y = valid_rows(batch, "masks").float()
        y4 = F.adaptive_avg_pool2d(y, out["p"].shape[-2:])
        y8 = F.adaptive_avg_pool2d(y, out["h"].shape[-2:])
        lp = F.binary_cross_entropy_with_logits(out["p"].float(), y4)
        lh = F.binary_cross_entropy_with_logits(out["h"].float(), y8)
        return lp + 0.1 * lh, {"bce_p": lp.detach(), "bce_h": lh.detach()}

    @staticmethod
    def probabilities(out: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(foreground probabilities (M, 1, S/4, S/4), per-image target decision or None)."""
        return torch.sigmoid(out["p"].float()), None
