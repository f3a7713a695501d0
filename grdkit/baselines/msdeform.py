"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021) in plain PyTorch,
and the Mask2Former-style pixel decoder built on it (used by :mod:`.mabp`).

No maintained implementation installs from the package index and runs on CPU without compiling
(``mmcv``'s and the Deformable-DETR / Mask2Former ops are C++/CUDA extensions; transformers carries a
grid_sample version inside its Deformable-DETR model, whose signature has changed between the
versions grdkit allows), so this module has its own: :func:`ms_deform_attn` samples every level
with ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``), exactly the reference
semantics of the CUDA kernel; ``tests/test_mabp.py`` checks it against a naive per-point bilinear
loop, values and gradients.

Shapes: ``value`` (N, S, heads, d) with S = sum of H_l * W_l (levels flattened row-major and
concatenated), ``shapes`` [(H_l, W_l)], ``locations`` (N, Lq, heads, levels, points, 2) as (x, y) in
[0, 1] (pixel centres at (i + 0.5) / W), ``weights`` (N, Lq, heads, levels, points).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def ms_deform_attn(value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """Sum over levels and points of ``weights * bilinear(value_level, location)``.

    Returns:
        ``(N, Lq, heads * d)``.
    """
    n, _, heads, d = value.shape
    _, lq, _, levels, points, _ = locations.shape
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(n * heads, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N*heads, Lq, points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # (N*heads, d, Lq, points)
    w = weights.transpose(1, 2).reshape(n * heads, 1, lq, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * w).sum(-1)  # (N*heads, d, Lq)
    return out.view(n, heads * d, lq).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Deformable DETR eq. 3, its initialisation).

    Args:
        dim: model width; levels, heads, points: as the paper (Mask2Former: 3, 8, 4).
    """

    def __init__(self, dim: int = 256, levels: int = 3, heads: int = 8, points: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.offsets = nn.Linear(dim, heads * levels * points * 2)
        self.weights = nn.Linear(dim, heads * levels * points)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.offsets.weight, 0.0)
        theta = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        for i in range(self.points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.weights.weight, 0.0)
        nn.init.constant_(self.weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value.weight)
        nn.init.constant_(self.value.bias, 0.0)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.constant_(self.out.bias, 0.0)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, source: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query (N, Lq, C), reference (N, Lq, levels, 2) in [0, 1], source (N, S, C)."""
        n, lq, _ = query.shape
        v = self.value(source).view(n, source.shape[1], self.heads, self.dim // self.heads)
        off = self.offsets(query).view(n, lq, self.heads, self.levels, self.points, 2)
        w = self.weights(query).view(n, lq, self.heads, self.levels * self.points).softmax(-1)
        w = w.view(n, lq, self.heads, self.levels, self.points)
        norm = torch.tensor([[w_, h_] for h_, w_ in shapes], dtype=query.dtype,
                            device=query.device)  # (levels, 2) as (W, H)
        loc = reference[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
        return self.out(ms_deform_attn(v, shapes, loc, w))


def sine_position(h: int, w: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """DETR's normalised sine position embedding, ``(h * w, dim)`` (row-major pixels)."""
    half = dim // 2
    y = (torch.arange(h, device=device, dtype=torch.float32) + 1) / (h + 1e-6) * 2 * math.pi
    x = (torch.arange(w, device=device, dtype=torch.float32) + 1) / (w + 1e-6) * 2 * math.pi
    t = 10000 ** (2 * (torch.arange(half, device=device) // 2) / half)
    px = x[:, None] / t
    py = y[:, None] / t
    px = torch.stack([px[:, 0::2].sin(), px[:, 1::2].cos()], 2).flatten(1)  # (w, half)
    py = torch.stack([py[:, 0::2].sin(), py[:, 1::2].cos()], 2).flatten(1)  # (h, half)
    pos = torch.cat([py[:, None, :].expand(h, w, half), px[None, :, :].expand(h, w, half)], -1)
    if pos.shape[-1] < dim:  # odd dim
        pos = F.pad(pos, (0, dim - pos.shape[-1]))
    return pos.reshape(h * w, dim).to(dtype)


def reference_points(shapes: list[tuple[int, int]], device=None) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1]: ``(S, 2)`` as (x, y)."""
    pts = []
    for h, w in shapes:
        ys, xs = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h,
                                (torch.arange(w, device=device) + 0.5) / w, indexing="ij")
        pts.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    return torch.cat(pts)


class DeformEncoderLayer(nn.Module):
    """Deformable self-attention over all levels + FFN, post-norm (Deformable DETR encoder)."""

    def __init__(self, dim: int, ffn: int, levels: int, heads: int, points: int,
                 dropout: float = 0.0):
        super().__init__()
        self.attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, src, pos, ref, shapes):
        src = self.norm1(src + self.drop(self.attn(src + pos, ref, src, shapes)))
        return self.norm2(src + self.drop(self.ffn(src)))


def _gn(dim: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, dim), dim)


class PixelDecoder(nn.Module):
    """Mask2Former's ``MSDeformAttnPixelDecoder``: the 1/32, 1/16, 1/8 features projected to
    ``dim`` (1x1 conv + GroupNorm), a deformable-attention encoder over the three levels (sine
    positions + learnt level embeddings), then an FPN step with the 1/4 feature giving the mask
    features.

    Args:
        channels: input channels at strides (4, 8, 16, 32). dim: width. layers: encoder layers
        (Mask2Former / MABP: 6). ffn: encoder FFN width (1024). heads, points: 8, 4.

    ``forward([f4, f8, f16, f32]) -> (mask_features (N, dim, H/4, W/4), [m32, m16, m8])``.
    """

    def __init__(self, channels: list[int], dim: int = 256, layers: int = 6, ffn: int = 1024,
                 heads: int = 8, points: int = 4, dropout: float = 0.0):
        super().__init__()
        c4, c8, c16, c32 = channels
        self.proj = nn.ModuleList([nn.Sequential(nn.Conv2d(c, dim, 1), _gn(dim))
                                   for c in (c32, c16, c8)])
        self.level_embed = nn.Parameter(torch.randn(3, dim) * dim ** -0.5)
        self.layers = nn.ModuleList([DeformEncoderLayer(dim, ffn, 3, heads, points, dropout)
                                     for _ in range(layers)])
        self.lateral = nn.Sequential(nn.Conv2d(c4, dim, 1, bias=False), _gn(dim))
        self.output = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), _gn(dim),
                                    nn.ReLU(inplace=True))
        self.mask_features = nn.Conv2d(dim, dim, 1)
        for m in (*self.proj, self.lateral, self.output):
            nn.init.xavier_uniform_(m[0].weight, gain=1)
            if m[0].bias is not None:
                nn.init.constant_(m[0].bias, 0)
        self.dim = dim

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f4, f8, f16, f32 = feats
        xs = [p(f) for p, f in zip(self.proj, (f32, f16, f8))]
        shapes = [tuple(x.shape[-2:]) for x in xs]
        n, dev, dt = xs[0].shape[0], xs[0].device, xs[0].dtype
        src = torch.cat([x.flatten(2).transpose(1, 2) for x in xs], 1)
        pos = torch.cat([sine_position(h, w, self.dim, dev, dt) + self.level_embed[k]
                         for k, (h, w) in enumerate(shapes)], 0)[None].expand(n, -1, -1)
        ref = reference_points(shapes, dev).to(dt)
        ref = ref[None, :, None, :].expand(n, -1, len(shapes), -1)
        for layer in self.layers:
            src = layer(src, pos, ref, shapes)
        outs, start = [], 0
        for (h, w) in shapes:
            outs.append(src[:, start:start + h * w].transpose(1, 2).reshape(n, self.dim, h, w))
            start += h * w
        y = self.lateral(f4) + F.interpolate(outs[-1], size=f4.shape[-2:], mode="bilinear",
                                             align_corners=False)
        return self.mask_features(self.output(y)), outs
