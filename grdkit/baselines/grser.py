"""GRSer, the Grouped Referring Segmenter (Wu et al., "Advancing Referring Expression Segmentation
Beyond Single Image", ICCV 2023, §3 and §5.2), reimplemented from the paper: no official code
exists. Equation numbers are the paper's; every choice it leaves open is marked "choice".

* Text: expression -> L (C_l); anti-expression ``"<no> " + expression`` -> L_anti.
* Vision: V_n, C_v = 512 after projection, for each of the N images of a group. Choice: V_n is
  the stride-16 feature merged with the up-sampled stride-32 feature (concat, 1x1 conv, C_v).
* Triphasic Query Module (``tqm``): language heatmap M^l_n = cos(V_n, w_l(L)) with w_l a 1x1
  convolution, i.e. a linear map of L to C_v (eq. 1); prototypes p_n = spatial mean of
  M^l_n * V_n (eq. 2); vision heatmaps M^v_ni = cos(V_n, p_i) for every i of the group (eq. 3).
* Heatmap Hierarchizer (``hierarchizer``, eq. 4): s_pos_i = ||p_i - L'||, s_neg_i =
  ||p_i - L'_anti|| with L', L'_anti the projections of L, L_anti to C_v (choice: one shared
  linear map); R_pos ranks s_pos ascending, R_neg ranks s_neg descending; the N vision heatmaps
  are reordered by R_pos + R_neg ascending (ties by group order). ``rank`` = ``pos`` / ``neg``
  uses one ranking, ``random`` a random order (ablations, Table 6).
* Mask predictor: z_n = conv(concat(V_n, M^l_n, reordered M^v_n1..N)) -> decoder (two
  up-sampling stages with the stride-8 feature) -> mask logits at 1/4. Groups smaller than N are
  zero-padded to N heatmaps. Choice (the paper does not say how the feature map z_n meets L):
  z_n is globally average-pooled and linearly projected to C_v, giving a_n.
* Masks: sigmoid probabilities thresholded at 0.25 (choice: LTS's value; GRSer's is not given).
* Positive / negative decision: d(a_n, L') + m < d(a_n, L'_anti), Euclidean, m = 1 -> positive;
  otherwise the predicted mask is all zero.
* Losses (eq. 5-6): triplet margin loss (margin m = 1) on all images with anchor a_n, positive
  L' and negative L'_anti for positive images (swapped for negative images), weighted t/T (t the
  epoch counted from 1, T the number of epochs); binary cross-entropy on the masks of positive
  images only; mirror training (``mirror``): the same model queried with L and L_anti swapped must
  segment the background 1 - Y of positive images, weight lambda = 0.5 (choice: the paper gives
  no value we can rely on).
* Without the TQM (``tqm=False``) only V_n and the language heatmap reach the decoder; without
  the triplet loss (``triplet=False``) the decision rule is untrained, so an image is positive
  when its thresholded mask is not empty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import DEFAULT_TEXT, DEFAULT_VISION, attach_encoders
from .lts import conv_bn

RANKS = ("pos+neg", "pos", "neg", "random")
MIRROR_LAMBDA = 0.5
MARGIN = 1.0


def ranks(scores: torch.Tensor, descending: bool = False) -> torch.Tensor:
    """Rank (0 = first) of each entry of a 1-D tensor; ties keep index order (stable sort)."""
    order = torch.sort(scores, descending=descending, stable=True).indices
    r = torch.empty_like(order)
    r[order] = torch.arange(len(order), device=scores.device)
    return r


def hierarchy_order(p: torch.Tensor, l_pos: torch.Tensor, l_neg: torch.Tensor,
                    mode: str = "pos+neg", generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Eq. 4: the order in which the group's N vision heatmaps are stacked.

    Args:
        p: prototypes ``(N, C_v)``; l_pos, l_neg: projected L and L_anti ``(C_v,)``.
        mode: ``pos+neg`` (paper), ``pos``, ``neg`` or ``random``.

    Returns:
        int64 ``(N,)``: indices i of the heatmaps, most likely positive first.
    """
    n = p.shape[0]
    if mode == "random":
        return torch.randperm(n, generator=generator, device="cpu").to(p.device)
    s_pos = torch.linalg.vector_norm(p - l_pos, dim=1)
    s_neg = torch.linalg.vector_norm(p - l_neg, dim=1)
    r_pos = ranks(s_pos, descending=False)
    r_neg = ranks(s_neg, descending=True)
    key = {"pos+neg": r_pos + r_neg, "pos": r_pos, "neg": r_neg}[mode]
    return torch.sort(key, stable=True).indices


def cosine_map(v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """cos(V, q) per pixel: v ``(N, C, H, W)``, q ``(N, C)`` or ``(C,)`` -> ``(N, 1, H, W)``."""
    if q.dim() == 1:
        q = q.expand(v.shape[0], -1)
    return F.cosine_similarity(v, q[:, :, None, None], dim=1, eps=1e-6).unsqueeze(1)


def prototypes(v: torch.Tensor, m_l: torch.Tensor) -> torch.Tensor:
    """Eq. 2: spatial mean of M^l_n * V_n -> ``(N, C)``."""
    return (m_l * v).mean(dim=(2, 3))


def decide(a: torch.Tensor, l_pos: torch.Tensor, l_neg: torch.Tensor,
           margin: float = MARGIN) -> torch.Tensor:
    """Inference rule: d(a_n, L') + m < d(a_n, L'_anti) -> positive. ``a`` ``(N, C)``."""
    d_pos = torch.linalg.vector_norm(a - l_pos, dim=1)
    d_neg = torch.linalg.vector_norm(a - l_neg, dim=1)
    return d_pos + margin < d_neg


class GRSer(nn.Module):
    """Grouped Referring Segmenter; see the module header.

    Args:
        vision, vision_weights, text, text_gru, train_text, freeze_vision: as for LTS.
        width: C_v (paper: 512). group_size: N, the number of heatmap channels.
        tqm, hierarchizer, mirror, triplet: the paper's components (ablation switches).
        rank: ``pos+neg`` | ``pos`` | ``neg`` | ``random``.

    Output of ``forward``: ``{"p": (M, 1, S/4, S/4) mask logits, "a": (M, C_v) anchors,
    "l_pos": (B, C_v), "l_neg": (B, C_v), "mirror": logits with L / L_anti swapped or None}``.
    """

    name = "grser"

    def __init__(self, vision: str = DEFAULT_VISION, vision_weights="bundled",
                 text: str = DEFAULT_TEXT, text_gru: bool = False, width: int = 512,
                 group_size: int = 8, train_text: bool = False, freeze_vision: bool = False,
                 tqm: bool = True, hierarchizer: bool = True, mirror: bool = True,
                 triplet: bool = True, rank: str = "pos+neg", seed: int = 0):
        super().__init__()
        if rank not in RANKS:
            raise ValueError(f"rank must be one of {RANKS}")
        attach_encoders(self, vision, vision_weights, text, text_gru, train_text, freeze_vision)
        c8, c16, c32 = self.vision.channels
        c, cl = width, self.text.dim
        self.n_max, self.use_tqm, self.use_hier = int(group_size), tqm, hierarchizer
        self.use_mirror, self.use_triplet, self.rank_mode = mirror, triplet, rank
        self.v16 = nn.Conv2d(c16, c, 1)
        self.v32 = nn.Conv2d(c32, c, 1)
        self.v_merge = conv_bn(2 * c, c, 1)
        self.w_l = nn.Linear(cl, c)            # eq. 1 (a 1x1 conv on the sentence vector)
        self.l_proj = nn.Linear(cl, c)         # L -> L', L_anti -> L'_anti (eq. 4, decision)
        heat = 1 + (self.n_max if tqm else 0)
        self.z_conv = conv_bn(c + heat, c)
        self.a_proj = nn.Linear(c, c)
        self.dec16 = conv_bn(c, c // 2)
        self.skip8 = nn.Conv2d(c8, c // 2, 1)
        self.dec8 = conv_bn(c, c // 2)
        self.head = nn.Sequential(nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2),
                                  nn.BatchNorm2d(c // 4), nn.ReLU(inplace=True),
                                  nn.Conv2d(c // 4, 1, 1))
        self.generator = torch.Generator().manual_seed(seed)

    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        anti = [f"<no> {t}" for t in texts]
        both = self.text(list(texts) + anti)  # a frozen transformer is cached, its GRU trains
        return both[: len(texts)], both[len(texts):]

    def _group(self, v: torch.Tensor, f8: torch.Tensor, q: torch.Tensor, q_anti: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One group of n images queried with sentence q (its anti-sentence q_anti)."""
        n = v.shape[0]
        l_pos, l_neg = self.l_proj(q), self.l_proj(q_anti)
        m_l = cosine_map(v, self.w_l(q))                       # eq. 1
        maps = [m_l]
        if self.use_tqm:
            p = prototypes(v, m_l)                             # eq. 2
            m_v = torch.stack([cosine_map(v, p[i]) for i in range(n)], 1)[:, :, 0]  # eq. 3
            if self.use_hier:
                order = hierarchy_order(p.detach().float(), l_pos.detach().float(),
                                        l_neg.detach().float(), self.rank_mode,
                                        self.generator)        # eq. 4
                m_v = m_v[:, order]
            if n < self.n_max:
                m_v = F.pad(m_v, (0, 0, 0, 0, 0, self.n_max - n))
            maps.append(m_v[:, : self.n_max])
        z = self.z_conv(torch.cat([v, *maps], 1))
        a = self.a_proj(z.mean(dim=(2, 3)))
        y = self.dec16(z)
        y = F.interpolate(y, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec8(torch.cat([y, self.skip8(f8)], 1))
        return self.head(y), a, l_pos, l_neg

    def forward(self, batch: dict) -> dict:
        valid = batch["valid"]
        l, l_anti = self.encode_text(batch["expression"])
        ps, anchors, lps, lns, mirrors = [], [], [], [], []
        for b in range(valid.shape[0]):
            x = batch["images"][b][valid[b]]
            f8, f16, f32 = self.vision(x)
            up = F.interpolate(self.v32(f32), size=f16.shape[-2:], mode="bilinear",
                               align_corners=False)
            v = self.v_merge(torch.cat([self.v16(f16), up], 1))
            p, a, lp, ln = self._group(v, f8, l[b], l_anti[b])
            ps.append(p)
            anchors.append(a)
            lps.append(lp)
            lns.append(ln)
            if self.use_mirror and self.training:
                mirrors.append(self._group(v, f8, l_anti[b], l[b])[0])
        return {"p": torch.cat(ps), "a": torch.cat(anchors), "l_pos": torch.stack(lps),
                "l_neg": torch.stack(lns), "mirror": torch.cat(mirrors) if mirrors else None}

    def loss(self, out: dict, batch: dict, epoch: int = 0, epochs: int = 1) -> tuple:
        """Eq. 5-6 (see module header); returns (loss, parts)."""
        valid = batch["valid"]
        pos = batch["positive"][valid]
        y = F.adaptive_avg_pool2d(batch["masks"][valid], out["p"].shape[-2:])
        counts = valid.sum(1)
        l_pos = out["l_pos"].repeat_interleave(counts, 0)
        l_neg = out["l_neg"].repeat_interleave(counts, 0)
        parts = {}
        total = out["p"].new_zeros(())
        if pos.any():
            ce = F.binary_cross_entropy_with_logits(out["p"][pos].float(), y[pos])
            total = total + ce
            parts["bce"] = float(ce.detach())
            if out["mirror"] is not None:
                mir = F.binary_cross_entropy_with_logits(out["mirror"][pos].float(), 1 - y[pos])
                total = total + MIRROR_LAMBDA * mir
                parts["mirror"] = float(mir.detach())
        if self.use_triplet:
            positive = torch.where(pos[:, None], l_pos, l_neg)
            negative = torch.where(pos[:, None], l_neg, l_pos)
            tri = F.triplet_margin_loss(out["a"].float(), positive.float(), negative.float(),
                                        margin=MARGIN, p=2)
            w = (epoch + 1) / max(1, epochs)                       # t / T
            total = total + w * tri
            parts["triplet"] = float(tri.detach())
            parts["triplet_weight"] = w
        return total, parts

    def probabilities(self, out: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mask probabilities, per-image decision: the triplet rule, or None without it)."""
        probs = torch.sigmoid(out["p"].float())
        if not self.use_triplet:
            return probs, None
        n = out["a"].shape[0]
        lp = out["l_pos"].float().expand(n, -1) if out["l_pos"].shape[0] == 1 else None
        ln = out["l_neg"].float().expand(n, -1) if out["l_neg"].shape[0] == 1 else None
        if lp is None:
            raise ValueError("probabilities() expects one group per batch")
        return probs, decide(out["a"].float(), lp, ln)
