"""GRSer, the Grouped Referring Segmenter (Wu et al., "Advancing Referring Expression Segmentation
Beyond Single Image", ICCV 2023, §3 and §5.2), reimplemented from the paper: no official code
exists. Equation numbers are the paper's; every choice it leaves open is marked "choice".

* Text: expression -> L (C_l); anti-expression ``"<no> " + expression`` -> L_anti (choice: the
  prefix). Word features feed the optional PWAM fusion.
* Vision: V_n, C_v = 512 after projection, for each of the N images of a group. Choice: V_n is
  the stride-16 feature merged with the up-sampled stride-32 feature (concat, 1x1 conv, C_v).
  The paper's encoder is LAVT's (Swin-B with pixel-word attention); ``fusion="pwam"`` adds
  LAVT's pixel-word attention module (PWAM: pixel-to-word attention, element-wise product, a
  tanh language gate, residual) on the stride 8 / 16 / 32 features. What stays different from
  LAVT: the fused features are not fed back into the next encoder stage (timm backbones run
  whole), so language enters after each stage, not between them.
* omega_l (eq. 1): a linear map of a sentence feature to C_v (a 1x1 convolution on the sentence
  vector). L' = omega_l(L) and L'_anti = omega_l(L_anti) are used everywhere a sentence meets
  visual features: the language heatmap, the hierarchizer's ranking (eq. 4), the triplet loss
  and the decision rule, so the triplet loss shapes the space the hierarchizer ranks in.
* Triphasic Query Module (``tqm``): language heatmap M^l_n = cos(V_n, L') (eq. 1); prototypes
  p_n = spatial mean of M^l_n * V_n (eq. 2); vision heatmaps M^v_ni = cos(V_n, p_i) for every i
  of the group (eq. 3), computed as one batched product.
* Heatmap Hierarchizer (``hierarchizer``, eq. 4): s_pos_i = ||p_i - L'||, s_neg_i =
  ||p_i - L'_anti||; R_pos ranks s_pos ascending, R_neg ranks s_neg descending; the N vision
  heatmaps are reordered by R_pos + R_neg ascending (ties by group order). ``rank`` = ``pos`` /
  ``neg`` uses one ranking, ``random`` a random order (ablations, Table 6).
* Mask predictor: z_n = conv(concat(V_n, M^l_n, reordered M^v_n1..N)) -> decoder (two
  up-sampling stages with the stride-8 feature) -> mask logits at 1/4. Groups smaller than N are
  zero-padded to N heatmaps. The triplet anchor a_n is z_n itself, globally average-pooled
  (z_n has C_v channels: "the feature map z_n" of §3.4, no separate head; choice: the pooling).
* Masks: sigmoid probabilities thresholded at ``TrainConfig.threshold`` (0.25, choice: LTS's
  value; GRSer's is not given).
* Positive / negative decision: d(a_n, L') + m < d(a_n, L'_anti), Euclidean, m = ``margin``
  (1, §3.4) -> positive; otherwise the predicted mask is all zero.
* Losses (eq. 5-6): triplet margin loss (margin m) on all images with anchor a_n, positive L'
  and negative L'_anti for positive images (swapped for negative images), weighted t/T (t the
  epoch counted from 1, T the number of epochs); binary cross-entropy on the masks of positive
  images only; mirror training (``mirror``): the same model queried with L and L_anti swapped must
  segment the background 1 - Y of positive images, weight ``mirror_weight`` (lambda = 0.5,
  choice: the paper gives no value we can rely on). Per-image losses are masked sums divided by
  max(1, count), so every head stays in the graph when a batch has no positive image (DDP needs
  every parameter to receive a gradient).
* Without the TQM (``tqm=False``) only V_n and the language heatmap reach the decoder; without
  the triplet loss (``triplet=False``) the decision rule is untrained, so an image is positive
  when its thresholded mask is not empty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import valid_rows
from .encoders import DEFAULT_TEXT, DEFAULT_VISION, attach_encoders
from .lts import conv_bn

RANKS = ("pos+neg", "pos", "neg", "random")
FUSIONS = ("none", "pwam")
POOLS = ("mean", "mask")
ANCHORS = ("prototype", "mean", "z")
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


def vision_heatmaps(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Eq. 3 for a whole group at once: M^v_ni = cos(V_n, p_i) -> ``(N, N, H, W)``.

    v ``(N, C, H, W)``, p ``(N, C)``; each vector is normalised with eps 1e-6 (as
    :func:`torch.nn.functional.cosine_similarity`)."""
    vn = F.normalize(v, dim=1, eps=1e-6)
    pn = F.normalize(p, dim=1, eps=1e-6)
    return torch.einsum("nchw,ic->nihw", vn, pn)


def prototypes(v: torch.Tensor, m_l: torch.Tensor, pool: str = "mean") -> torch.Tensor:
    """Eq. 2: p_n = avg(M^l_n * V_n) -> ``(N, C)``, same dtype as ``v``.

    Args:
        v: V_n ``(N, C, H, W)``; m_l: M^l_n ``(N, 1, H, W)`` (a cosine, in [-1, 1]).
        pool: ``mean`` divides the sum over pixels by H*W (§3.2: "averaged along spatial
            dimension (i.e., H x W)"; the default); ``mask`` divides by sum |M^l_n| + 1e-6 (the
            "mask average pooling" of few-shot segmentation, PANet / SG-One, whose masks are
            non-negative; M^l_n is a signed cosine, so the absolute value keeps the denominator
            away from 0: ours).

    Raises:
        ValueError: an unknown ``pool``.
    """
    if pool == "mean":
        return (m_l * v).mean(dim=(2, 3))
    if pool == "mask":
        return (m_l * v).sum(dim=(2, 3)) / (m_l.abs().sum(dim=(2, 3)) + 1e-6)
    raise ValueError(f"pool must be one of {POOLS}")


def decide(a: torch.Tensor, l_pos: torch.Tensor, l_neg: torch.Tensor,
           margin: float = MARGIN) -> torch.Tensor:
    """Inference rule: d(a_n, L') + m < d(a_n, L'_anti) -> positive. ``a`` ``(N, C)``."""
    d_pos = torch.linalg.vector_norm(a - l_pos, dim=1)
    d_neg = torch.linalg.vector_norm(a - l_neg, dim=1)
    return d_pos + margin < d_neg


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


class GRSer(nn.Module):
    """Grouped Referring Segmenter; see the module header (fidelity table).

    Args:
        vision, vision_weights, text, text_gru, train_text, freeze_vision: as for LTS.
        width: C_v (paper: 512). group_size: N, the number of heatmap channels.
        tqm, mirror, triplet: the paper's components (ablation switches, Table 5).
        hierarchizer: False is Table 5's "w/o HMapHier", which Table 4's first row defines as a
            random order at training and at test: the same as ``rank="random"``.
        rank: eq. 4's ranking criterion ``pos+neg`` | ``pos`` | ``neg`` | ``random`` (Table 4);
            at test :meth:`set_inference` may choose another one.
        pool: eq. 2's pooling, ``mean`` (divide by H*W, default) or ``mask`` (see
            :func:`prototypes`).
        anchor: the triplet anchor a_n (eq. 5) and the decision rule's: ``prototype`` (default:
            eq. 2's pooling of z_n's V-part, so a_n = p_n), ``mean`` (plain spatial mean of the
            V-part), or ``z`` (grdkit <= 0.x: the spatial mean of the decoder's first conv
            over z_n, a space the ranking never sees; kept to reproduce the old runs).
        fusion: ``none`` or ``pwam`` (LAVT's pixel-word attention on the encoder features).
        margin: m of the triplet loss and decision rule (paper: 1).
        mirror_weight: lambda of the mirror loss (not published; 0.5, ours).
        image_size: S, for backbones built for an input size (Swin).

    Output of ``forward``: ``{"p": (M, 1, S/4, S/4) mask logits, "a": (M, C_v) anchors,
    "l_pos": (B, C_v) L', "l_neg": (B, C_v) L'_anti, "s_pos" / "s_neg": (M,) float32 eq. 4
    scores of each image's own prototype, "order": list of each group's heatmap order (eq. 4)
    or None without the TQM, "mirror": logits with L / L_anti swapped or None}``.

    Raises:
        ValueError: an unknown ``rank``, ``fusion``, ``pool`` or ``anchor``.
    """

    name = "grser"

    def __init__(self, vision: str = DEFAULT_VISION, vision_weights="bundled",
                 text: str = DEFAULT_TEXT, text_gru: bool = False, width: int = 512,
                 group_size: int = 8, train_text: bool = False, freeze_vision: bool = False,
                 tqm: bool = True, hierarchizer: bool = True, mirror: bool = True,
                 triplet: bool = True, rank: str = "pos+neg", seed: int = 0,
                 fusion: str = "none", margin: float = MARGIN,
                 mirror_weight: float = MIRROR_LAMBDA, image_size: int | None = None,
                 pool: str = "mean", anchor: str = "prototype"):
        super().__init__()
        for value, allowed, what in ((rank, RANKS, "rank"), (fusion, FUSIONS, "fusion"),
                                     (pool, POOLS, "pool"), (anchor, ANCHORS, "anchor")):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {allowed}")
        if not hierarchizer and rank not in ("random", "pos+neg"):
            raise ValueError(f"hierarchizer=False is rank 'random'; it contradicts rank {rank!r}")
        attach_encoders(self, vision, vision_weights, text, text_gru, train_text, freeze_vision,
                        image_size)
        c8, c16, c32 = self.vision.channels
        c, cl = width, self.text.dim
        self.n_max, self.use_tqm = int(group_size), tqm
        self.use_mirror, self.use_triplet = mirror, triplet
        self.rank_mode = rank if hierarchizer else "random"
        self.pool, self.anchor = pool, anchor
        self.margin, self.mirror_weight = float(margin), float(mirror_weight)
        self.pwam = nn.ModuleList([PWAM(ch, cl) for ch in (c8, c16, c32)]) \
            if fusion == "pwam" else None
        self.v16 = nn.Conv2d(c16, c, 1)
        self.v32 = nn.Conv2d(c32, c, 1)
        self.v_merge = conv_bn(2 * c, c, 1)
        self.w_l = nn.Linear(cl, c)            # omega_l of eq. 1 (a 1x1 conv on a sentence)
        heat = 1 + (self.n_max if tqm else 0)
        self.z_conv = conv_bn(c + heat, c)
        self.dec16 = conv_bn(c, c // 2)
        self.skip8 = nn.Conv2d(c8, c // 2, 1)
        self.dec8 = conv_bn(c, c // 2)
        self.head = nn.Sequential(nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2),
                                  nn.BatchNorm2d(c // 4), nn.ReLU(inplace=True),
                                  nn.Conv2d(c // 4, 1, 1))
        self.generator = torch.Generator().manual_seed(seed)

    def set_inference(self, rank: str | None = None) -> None:
        """Choose the ranking criterion used from now on (Table 4's "Test" column); None keeps
        the trained one.

        Raises:
            ValueError: an unknown ``rank``.
        """
        if rank is not None:
            if rank not in RANKS:
                raise ValueError(f"rank must be one of {RANKS}")
            self.rank_mode = rank

    def _heatmaps(self, v: torch.Tensor, q: torch.Tensor, q_anti: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One group's heatmaps (eq. 1-4) with sentence q and anti-sentence q_anti (both already
        projected by omega_l): ``(n, 1 [+ N], H, W)``, the prototypes ``(n, C_v)`` and the
        heatmap order (or None without the TQM)."""
        n = v.shape[0]
        m_l = cosine_map(v, q)                                     # eq. 1
        p = prototypes(v, m_l, self.pool)                          # eq. 2
        if not self.use_tqm:
            return m_l, p, None
        m_v = vision_heatmaps(v, p)                                # eq. 3
        order = hierarchy_order(p.detach().float(), q.detach().float(),
                                q_anti.detach().float(), self.rank_mode,
                                self.generator)                    # eq. 4
        m_v = m_v[:, order]
        if n < self.n_max:
            m_v = F.pad(m_v, (0, 0, 0, 0, 0, self.n_max - n))
        # a test group larger than the trained N keeps its N best-ranked heatmaps
        return torch.cat([m_l, m_v[:, : self.n_max]], 1), p, order

    def _decode(self, v: torch.Tensor, f8: torch.Tensor, maps: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """z_n = concat(V_n, heatmaps) -> (mask logits, spatial mean of the decoder's first conv
        over z_n: the anchor of ``anchor="z"`` only)."""
        z = self.z_conv(torch.cat([v, maps], 1))
        y = self.dec16(z)
        y = F.interpolate(y, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec8(torch.cat([y, self.skip8(f8)], 1))
        return self.head(y), z.mean(dim=(2, 3))

    def forward(self, batch: dict) -> dict:
        texts = list(batch["expression"])
        words, wmask, both = self.text.encode(texts + [f"<no> {t}" for t in texts])
        b = len(texts)
        q_all = self.w_l(both)                                     # omega_l(L), omega_l(L_anti)
        q, q_anti = q_all[:b], q_all[b:]
        x = valid_rows(batch, "images")
        feats = self.vision(x)                  # one backbone call for every image of the step
        if self.pwam is not None:
            g = batch["group"]
            w, wm = words[:b].index_select(0, g), wmask[:b].index_select(0, g)
            feats = [mod(f, w, wm) for mod, f in zip(self.pwam, feats)]
        f8, f16, f32 = feats
        up = F.interpolate(self.v32(f32), size=f16.shape[-2:], mode="bilinear",
                           align_corners=False)
        v = self.v_merge(torch.cat([self.v16(f16), up], 1))      # V_n, the V-part of z_n
        groups = torch.split(v, batch["counts"])
        maps, protos, orders = zip(*(self._heatmaps(vg, q[k], q_anti[k])
                                     for k, vg in enumerate(groups)))
        p_all = torch.cat(protos)
        logits, z_pool = self._decode(v, f8, torch.cat(maps))
        # the anchor lives where the prototypes live: no layer between V_n and a_n (eq. 5)
        a = {"prototype": p_all, "mean": v.mean(dim=(2, 3)), "z": z_pool}[self.anchor]
        group = batch["group"]
        pf = p_all.detach().float()
        s_pos = torch.linalg.vector_norm(pf - q.detach().float().index_select(0, group), dim=1)
        s_neg = torch.linalg.vector_norm(pf - q_anti.detach().float().index_select(0, group),
                                         dim=1)
        mirror = None
        if self.use_mirror and self.training:
            mirror_maps = [self._heatmaps(vg, q_anti[k], q[k])[0] for k, vg in enumerate(groups)]
            mirror = self._decode(v, f8, torch.cat(mirror_maps))[0]
        return {"p": logits, "a": a, "l_pos": q, "l_neg": q_anti, "s_pos": s_pos,
                "s_neg": s_neg, "order": list(orders) if self.use_tqm else None,
                "mirror": mirror}

    def loss(self, out: dict, batch: dict, epoch: int = 0, epochs: int = 1) -> tuple:
        """Eq. 5-6 (see module header); returns (loss, parts as detached 0-d tensors, and the
        triplet weight as a float)."""
        pos = valid_rows(batch, "positive")
        w = pos.float()
        n_pos = w.sum().clamp_min(1.0)
        y = F.adaptive_avg_pool2d(valid_rows(batch, "masks").float(), out["p"].shape[-2:])
        group = batch["group"]
        l_pos = out["l_pos"].index_select(0, group)
        l_neg = out["l_neg"].index_select(0, group)

        def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            per_image = F.binary_cross_entropy_with_logits(
                logits.float(), target, reduction="none").mean(dim=(1, 2, 3))
            return (per_image * w).sum() / n_pos          # positives only; 0 (in graph) if none

        ce = masked_bce(out["p"], y)
        total, parts = ce, {"bce": ce.detach()}
        if out["mirror"] is not None:
            mir = masked_bce(out["mirror"], 1 - y)
            total = total + self.mirror_weight * mir
            parts["mirror"] = mir.detach()
        if self.use_triplet:
            positive = torch.where(pos[:, None], l_pos, l_neg)
            negative = torch.where(pos[:, None], l_neg, l_pos)
            tri = F.triplet_margin_loss(out["a"].float(), positive.float(), negative.float(),
                                        margin=self.margin, p=2)
            tw = (epoch + 1) / max(1, epochs)                    # t / T
            total = total + tw * tri
            parts["triplet"] = tri.detach()
            parts["triplet_weight"] = tw
        return total, parts

    def diagnose(self, out: dict, batch: dict) -> dict:
        """What :meth:`summarize_diagnostics` needs from one training step, detached, on the
        step's device: the margins s_neg - s_pos ``(M,)``, the image labels
        ``(M,)``, whether each group's heatmap order is the identity ``(B,)`` and ||L' -
        L'_anti|| ``(B,)``."""
        if out["order"] is None:
            ident = torch.zeros(out["l_pos"].shape[0], dtype=torch.bool)
        else:  # one small host copy per step
            ident = torch.tensor([torch.equal(o.cpu(), torch.arange(len(o)))
                                  for o in out["order"]], dtype=torch.bool)
        return {"margin": (out["s_neg"] - out["s_pos"]).detach(),
                "positive": valid_rows(batch, "positive").detach(),
                "identity": ident.cpu(),
                "gap": torch.linalg.vector_norm(
                    (out["l_pos"] - out["l_neg"]).detach().float(), dim=1)}

    def summarize_diagnostics(self, steps: list[dict]) -> dict:
        """Per-epoch diagnostics of the hierarchizer (issue 17) from :meth:`diagnose` records:

        * ``proto_auc``: ROC AUC (0-1) of s_neg - s_pos of each image's prototype against its
          label (positive image = 1): 1 when every positive prototype is nearer L' (relative to
          L'_anti) than every negative one, 0.5 for chance; None without both labels;
        * ``identity_share``: share (0-1) of groups whose eq. 4 order is the identity;
        * ``l_gap``: mean ||L' - L'_anti|| over the groups.
        """
        if not steps:
            return {}
        margin = torch.cat([s["margin"].float().cpu() for s in steps])
        label = torch.cat([s["positive"].cpu() for s in steps])
        return {"proto_auc": roc_auc(margin, label),
                "identity_share": float(torch.cat([s["identity"] for s in steps]).float().mean()),
                "l_gap": float(torch.cat([s["gap"].cpu() for s in steps]).mean())}

    def probabilities(self, out: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mask probabilities, per-image decision: the triplet rule, or None without it)."""
        probs = torch.sigmoid(out["p"].float())
        if not self.use_triplet:
            return probs, None
        n = out["a"].shape[0]
        if out["l_pos"].shape[0] != 1:
            raise ValueError("probabilities() expects one group per batch")
        return probs, decide(out["a"].float(), out["l_pos"].float().expand(n, -1),
                             out["l_neg"].float().expand(n, -1), self.margin)


def roc_auc(score: torch.Tensor, label: torch.Tensor) -> float | None:
    """ROC AUC of ``score`` ``(K,)`` against boolean ``label`` ``(K,)`` by the Mann-Whitney U
    statistic with average ranks for ties (AUC = (sum of positive ranks - P(P+1)/2) / (P*N));
    None unless both labels occur. Own code: a few lines, and no scikit-learn dependency."""
    pos = label.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    s = score.double()
    order = torch.argsort(s, stable=True)
    ranks_ = torch.empty_like(s)
    ranks_[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    uniq, inverse = torch.unique(s, return_inverse=True)
    mean_rank = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks_)
    mean_rank /= torch.bincount(inverse, minlength=len(uniq)).double()
    r = mean_rank[inverse]
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
