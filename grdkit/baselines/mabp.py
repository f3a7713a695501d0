"""MABP, the Model with Adaptive Binding Prototypes (Li, Zhao, Bai, Su, "Bring Adaptive Binding
Prototypes to Generalized Referring Expression Segmentation", IEEE TMM; arXiv 2405.15169),
reimplemented from the paper (§III) for single images. Facts the paper does not give (query counts,
loss weights, thresholds) were read from the official repository buptLwz/MABP (configs/gres-MABP.yaml,
referring_R50.yaml, criterion.py, referring_transformer_decoder.py, refer_evaluation.py), which
was read, not copied. Every choice neither settles, or where they disagree, is marked "choice".

Each valid image of a batch is an independent sample queried with its batch entry's expression
(gRefCOCO groups have one image; GRES groups are split into single images).

* Visual encoder: features at strides 4, 8, 16, 32 (:class:`.encoders.VisionEncoder` with
  ``strides=(4, 8, 16, 32)``; the 1/4 one
  feeds the pixel decoder's FPN step as in Mask2Former), then the multi-scale deformable-attention
  pixel decoder (:class:`.msdeform.PixelDecoder`): V_32, V_16, V_8 (width C) and mask features
  V_4. Official: 6 encoder layers, FFN 1024, 8 heads, 4 points, C = 256. Choice: the official
  Swin-B fuses language into every stage (LAVT-style PWAM); the issue's description and this
  module use a plain visual encoder.
* Language: word features W (T tokens, at most 20 as the official MAX_TOKENS) from the
  text encoder, projected to C: language tokens L = W_v W (also the values of the query
  generator); a sentence feature is the masked mean of L.
* Query generator: learnable region embeddings E (Q_0 = r_0^2, r_0 = 4: 16 regions as
  the official NUM_OBJECT_QUERIES) cross-attend to the words: Q = W_o softmax(LN(W_q E)(W_k W)^T /
  sqrt(C)) W_v W, giving region-text-specific initial queries; learnable query positions P_Q.
  Choice: softmax over the words (the official code uses the raw scaled similarity, no softmax).
* Mixed modal decoder, ``layers`` (3) per scale over V_32, V_16, V_8 (sine positions +
  a learnt level embedding): masked cross-attention of Q over [V_s; L], self-attention over
  [Q; L], FFN over both (post-norm, as the official configuration; padded words are masked).
  Attention mask (official): query q may not attend to a pixel that is outside its own window AND
  predicted background (sigmoid < 0.5) by the previous layer's RSH output at this scale; language
  tokens are never masked; no mask in the very first layer. After each scale but the last the
  query grid r x r is upsampled x2 by nearest neighbour (4 r^2 queries: 16 -> 64 -> 256). Choice:
  the official per-layer Linear(20, 20) mixing of the language tokens along the token axis is
  left out (it needs a fixed sentence length).
* Regional supervision head, RSH: the map V (H x W) is cut into an r x r grid of equal
  windows of side ceil(H / r) (the map centred in the padded grid, as the official padding), and
  the logit of pixel p is <MLP_3(LN(q_{w(p)})), V_p> with w(p) the window holding p: each query
  is dotted only with its own window, so its gradient comes only from that region. Deep
  supervision at 1/32, 1/16, 1/8 with the MMD queries of that scale (dotted with V_s); the final
  prediction at 1/4 dots the mask features V_4 with the 16 x 16 queries refined by an FPN over the
  three query grids (official: lateral 1x1 conv + bilinear upsampling + 3x3 conv, ReLU).
* No-target branch, per prediction level: region centroids c_q = W_c avgpool(window q)
  (choice: the mean over the window's real pixels, not over its zero padding), sentence embedding
  s = MLP_2(sentence feature of the current language tokens) (choice: the official MLP runs over
  the fixed 20-token axis), e_q = W_e MLP_3(LN(q)); a = [<e_q, s>]_q, b = [<e_q, c_q>]_q;
  indicator logits = MLP([a; b]) with ``nt_hidden`` hidden layers of width 2Q (the issue's
  reading of the paper: 2; the official code has 1) -> 2 logits, class 1 = no target.
* Losses: BCE + Dice on the masks of every image (negatives have empty masks) against the
  ground truth nearest-downsampled to each prediction's size, cross-entropy on the indicator.
  Weights (official configs/gres-MABP.yaml): BCE_final 5, Dice_final 5, BCE_intermediate 0.5,
  Dice_intermediate 0.5 (each averaged over the 3 intermediate levels), CE_nt 2.5 (averaged over
  the 4 levels), class weights (0.9, 1.1) as the official criterion (weighted terms averaged over
  images). Dice = 1 - (2 sum(p y) + 1) / (sum p + sum y + 1) per image, averaged. Choice (the
  official criterion differs): plain BCE (official: pos_weight 1.1 and an entropy weight), the
  final prediction compared at 1/4 (official: upsampled to the input, bilinear) and intermediate
  targets nearest-downsampled (official: bilinear).
* Inference: mask = sigmoid(final logits) > 0.5 (official evaluator; :data:`THRESHOLD`); no target
  when the indicator says so (``nt_rule``: ``any`` level, as the official evaluator, ``last``, or
  ``first``, the paper's reported setting per the official README); masks with fewer than 50
  pixels are reset to no target (the paper's rule; :data:`MIN_PIXELS`).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import valid_rows
from .encoders import DEFAULT_TEXT, DEFAULT_VISION, TextEncoder, VisionEncoder
from .fusion import PWAM
from .msdeform import PixelDecoder, sine_position

LOSS_WEIGHTS = {"bce_final": 5.0, "dice_final": 5.0, "bce_mid": 0.5, "dice_mid": 0.5, "nt": 2.5}
NT_CLASS_WEIGHTS = (0.9, 1.1)   # (target, no target), official criterion
THRESHOLD = 0.5                 # official evaluator
MIN_PIXELS = 50                 # paper: CGFormer (§IV-B) and the no-NT-branch ablation (Table VI)
MAX_TOKENS = 20                 # official REFERRING.MAX_TOKENS
NT_RULES = ("first", "any", "last")
NT_SENTENCES = ("words", "mean")
FUSIONS = ("pwam", "none")
HEAD_LAYER = (0, 1, 2, 2)       # decoding layer of each head: 1/32, 1/16, 1/8, final 1/4 (FPN)
# official train_net.py (build_optimizer): no weight decay on these parameter names
NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def supervised_heads(depth: int) -> list[int]:
    """Heads (0: 1/32, 1: 1/16, 2: 1/8, 3: final 1/4) supervised at Table VI depth ``depth``:
    every head of the last ``depth`` decoding layers (the final FPN prediction belongs to the
    last layer, whose queries it reads); 0: none."""
    return [k for k, layer in enumerate(HEAD_LAYER) if layer >= 3 - depth]

class MLP(nn.Module):
    """``layers`` linear layers with ReLU between them (``layers - 1`` hidden layers)."""

    def __init__(self, cin: int, hidden: int, cout: int, layers: int):
        super().__init__()
        dims = [cin] + [hidden] * (layers - 1) + [cout]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < len(self.layers) - 1:
                x = F.relu(x)
        return x


# ---------------------------------------------------------------- regions (RSH)

def region_ids(h: int, w: int, r: int, device=None) -> torch.Tensor:
    """Window index (row-major in the r x r grid) of every pixel of an h x w map, ``(h * w,)``.

    Windows are ``ceil(h / r) x ceil(w / r)``; the map sits centred in the padded r-grid (padding
    ``pad // 2`` before, the rest after, as the official 480-pixel layout). Windows lying wholly in
    the padding hold no pixel.
    """
    def axis(n: int) -> torch.Tensor:
        ws = -(-n // r)
        before = (r * ws - n) // 2
        return (torch.arange(n, device=device) + before) // ws

    return (axis(h)[:, None] * r + axis(w)[None, :]).reshape(-1)


def regional_logits(embed: torch.Tensor, feat: torch.Tensor, r: int) -> torch.Tensor:
    """RSH main branch: pixel p gets <embed_{w(p)}, feat_p>; embed ``(N, r*r, C)``, feat
    ``(N, C, H, W)`` -> logits ``(N, 1, H, W)``."""
    n, _, h, w = feat.shape
    ids = region_ids(h, w, r, feat.device)
    e = embed[:, ids]                                     # (N, HW, C)
    return (e * feat.flatten(2).transpose(1, 2)).sum(-1).view(n, 1, h, w)


def region_means(feat: torch.Tensor, r: int) -> torch.Tensor:
    """Mean feature of each window (0 for a window wholly in the padding): ``(N, r*r, C)``."""
    n, c, h, w = feat.shape
    ids = region_ids(h, w, r, feat.device)
    sums = feat.new_zeros(n, r * r, c).index_add_(1, ids, feat.flatten(2).transpose(1, 2))
    counts = torch.bincount(ids, minlength=r * r).clamp_min(1).to(feat.dtype)
    return sums / counts[None, :, None]


def upsample_queries(q: torch.Tensor, r: int) -> torch.Tensor:
    """Nearest x2 upsampling of an r x r query grid ``(N, r*r, C)`` -> ``(N, 4 r*r, C)``."""
    n, _, c = q.shape
    g = q.transpose(1, 2).reshape(n, c, r, r)
    return F.interpolate(g, scale_factor=2, mode="nearest").flatten(2).transpose(1, 2)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - (2 sum(p y) + 1) / (sum p + sum y + 1) per image, averaged (official smoothing)."""
    p = torch.sigmoid(logits.float()).flatten(1)
    y = target.float().flatten(1)
    return (1 - (2 * (p * y).sum(1) + 1) / (p.sum(1) + y.sum(1) + 1)).mean()


def nearest_target(y: torch.Tensor, size) -> torch.Tensor:
    """Ground truth ``(N, 1, S, S)`` nearest-downsampled to ``size``."""
    return F.interpolate(y, size=tuple(size), mode="nearest")


# ---------------------------------------------------------------- heads and layers

def pad_words(lang: torch.Tensor, lang_pad: torch.Tensor, tokens: int = MAX_TOKENS
              ) -> torch.Tensor:
    """Language tokens ``(N, T, C)`` (T <= ``tokens``) -> ``(N, tokens, C)`` with every padded
    position zero (the official code multiplies its 20-token features by the word mask).

    Raises:
        ValueError: more than ``tokens`` tokens.
    """
    t = lang.shape[1]
    if t > tokens:
        raise ValueError(f"{t} language tokens, at most {tokens}")
    x = lang.masked_fill(lang_pad[..., None], 0.0)
    return F.pad(x, (0, 0, 0, tokens - t))


class NoTargetHead(nn.Module):
    """No-target branch of one prediction level (§III-D2, Fig. 3 (c)): ``(mask embeddings (N, Q,
    C), region means (N, Q, C), language tokens (N, T, C), padding (N, T) bool) -> indicator
    logits (N, 2)``, class 1 = no target.

    Sentence embedding s (``sentence``): ``words`` (§III-D2: "an MLP to aggregate word-level
    features into sentence-level linguistic embeddings"; official nt_lang_emb_proj = MLP(20, 20,
    1, 2 layers) over the token axis, the tokens padded with zeros to :data:`MAX_TOKENS`) or
    ``mean`` (grdkit's earlier reading: masked mean over the words, then a 2-layer channel MLP).
    Indicator MLP: ``hidden_layers`` hidden layers of width 2Q (§III-D2: two).
    """

    def __init__(self, dim: int, queries: int, hidden_layers: int = 2, sentence: str = "words",
                 tokens: int = MAX_TOKENS):
        super().__init__()
        if sentence not in NT_SENTENCES:
            raise ValueError(f"nt_sentence must be one of {NT_SENTENCES}")
        self.sentence_mode, self.tokens = sentence, tokens
        self.centroid = nn.Linear(dim, dim)
        self.embed = nn.Linear(dim, dim)
        self.sentence = MLP(tokens, tokens, 1, 2) if sentence == "words" else MLP(dim, dim, dim, 2)
        self.mlp = MLP(2 * queries, 2 * queries, 2, hidden_layers + 1)

    def sentence_embedding(self, lang: torch.Tensor, lang_pad: torch.Tensor) -> torch.Tensor:
        """s ``(N, C)`` from the language tokens (padded words never contribute)."""
        if self.sentence_mode == "words":
            x = pad_words(lang, lang_pad, self.tokens)                # (N, 20, C)
            return self.sentence(x.transpose(1, 2)).squeeze(-1)      # MLP over the words
        keep = (~lang_pad).unsqueeze(-1).to(lang.dtype)
        return self.sentence((lang * keep).sum(1) / keep.sum(1).clamp_min(1.0))

    def scores(self, mask_embed, means, lang, lang_pad) -> torch.Tensor:
        """[<e_q, s>]_q ++ [<e_q, c_q>]_q, ``(N, 2Q)``."""
        e = self.embed(mask_embed)
        a = (e * self.sentence_embedding(lang, lang_pad)[:, None, :]).sum(-1)
        b = (e * self.centroid(means)).sum(-1)
        return torch.cat([a, b], -1)

    def forward(self, mask_embed, means, lang, lang_pad) -> torch.Tensor:
        return self.mlp(self.scores(mask_embed, means, lang, lang_pad))


class MMDLayer(nn.Module):
    """Mixed modal decoder layer: masked cross-attention over [visual; language], self-attention
    over [queries; language], FFN over both (post-norm)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.cross = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(inplace=True), nn.Linear(ffn, dim))
        self.norm3 = nn.LayerNorm(dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, q, q_pos, lang, lang_pos, lang_pad, vis, vis_pos, blocked=None):
        """q (N, Q, C); lang (N, T, C) with lang_pad (N, T) True at padding; vis (N, HW, C);
        blocked (N, Q, HW) bool (True: may not attend) or None. Returns (q, lang)."""
        n, nq, _ = q.shape
        hw = vis.shape[1]
        mem = torch.cat([vis, lang], 1)
        kpm = torch.cat([lang_pad.new_zeros(n, hw), lang_pad], 1)
        mask = None
        if blocked is not None:
            mask = torch.cat([blocked, blocked.new_zeros(n, nq, lang.shape[1])], 2)
            mask = mask.repeat_interleave(self.heads, 0)
        att = self.cross(q + q_pos, mem + torch.cat([vis_pos, lang_pos], 1), mem,
                         key_padding_mask=kpm, attn_mask=mask, need_weights=False)[0]
        q = self.norm1(q + att)
        x = torch.cat([q, lang], 1)
        x_pos = torch.cat([q_pos, lang_pos], 1)
        kpm2 = torch.cat([lang_pad.new_zeros(n, nq), lang_pad], 1)
        x = self.norm2(x + self.self_attn(x + x_pos, x + x_pos, x, key_padding_mask=kpm2,
                                          need_weights=False)[0])
        x = self.norm3(x + self.ffn(x))
        return x[:, :nq], x[:, nq:]


class MABP(nn.Module):
    """Model with Adaptive Binding Prototypes; see the module header (its fidelity table).

    Args:
        vision, vision_weights, text, text_gru, train_text, freeze_vision: encoders (as LTS).
        image_size: input size for visual encoders built for a fixed one (Swin: the run's --size).
        fusion: ``pwam`` (§III: language in the encoder; LAVT's PWAM after each of the four
            stages) or ``none`` (a plain visual encoder).
        width: C (paper / official 256). heads: attention heads (8). regions: r_0, the initial
            region grid side (4: 16 queries; 64 and 256 after the two upsamplings).
        layers: MMD layers per scale (3). dec_ffn: MMD FFN width (2048). enc_layers, enc_ffn,
            points: deformable pixel decoder (6, 1024, 4).
        query_generator: region-text-specific initial queries (§III-B); False: learnable,
            randomly initialised queries (Table V, No. 3).
        nt_hidden: hidden layers of the indicator MLP (§III-D2: 2). nt_sentence: ``words``
            (§III-D2) | ``mean`` (see :class:`NoTargetHead`). nt_rule: ``first`` (the paper's
            numbers, official README) | ``any`` (official evaluator) | ``last``: which
            supervised indicator decides.
        main_depth: deep-supervision depth of the main branch, 1-3 (Table VI; 3 = full).
        nt_depth: depth of the no-target branch, 0-3 (Table VI; 0 removes the branch and
            predicts no target for masks under 50 pixels, :data:`MIN_PIXELS`).
        decay_exempt: no weight decay on normalisation, embedding and Swin position-table
            parameters (official train_net.py); False: decay on every parameter.
        w_bce, w_dice, w_bce_mid, w_dice_mid, w_nt: loss weights (official 5, 5, 0.5, 0.5, 2.5).
        seed: seed of the parameter initialisation (the global RNG is left untouched).

    ``forward`` gives ``{"masks": [logits (M, 1, h, w) at 1/32, 1/16, 1/8, 1/4], "nt": [(M, 2)
    per supervised no-target head], "nt_heads": their head indices, "regions": [r per head]}``.

    Raises:
        ValueError: an unknown option value, or a width not divisible by heads.
    """

    name = "mabp"
    default_threshold = THRESHOLD
    default_min_pixels = 1      # the NT branch decides; MIN_PIXELS only without it (nt_depth 0)

    def __init__(self, vision: str = DEFAULT_VISION, vision_weights="bundled",
                 text: str = DEFAULT_TEXT, text_gru: bool = False, train_text: bool = False,
                 freeze_vision: bool = False, image_size: int | None = None,
                 fusion: str = "pwam", width: int = 256, heads: int = 8, regions: int = 4,
                 layers: int = 3, dec_ffn: int = 2048, enc_layers: int = 6, enc_ffn: int = 1024,
                 points: int = 4, query_generator: bool = True, nt_hidden: int = 2,
                 nt_sentence: str = "words", nt_rule: str = "first", main_depth: int = 3,
                 nt_depth: int = 3, decay_exempt: bool = True,
                 w_bce: float = 5.0, w_dice: float = 5.0, w_bce_mid: float = 0.5,
                 w_dice_mid: float = 0.5, w_nt: float = 2.5, seed: int = 0):
        super().__init__()
        if nt_rule not in NT_RULES:
            raise ValueError(f"nt_rule must be one of {NT_RULES}")
        if nt_sentence not in NT_SENTENCES:
            raise ValueError(f"nt_sentence must be one of {NT_SENTENCES}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}")
        if main_depth not in (1, 2, 3) or nt_depth not in (0, 1, 2, 3):
            raise ValueError("main_depth must be 1, 2 or 3 and nt_depth 0, 1, 2 or 3")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        if regions < 1 or layers < 1:
            raise ValueError("regions and layers must be >= 1")
        self.vision = VisionEncoder(vision, vision_weights, image_size, strides=(4, 8, 16, 32))
        self.text = TextEncoder(text, gru=text_gru, max_length=MAX_TOKENS, trainable=train_text)
        self.train_text, self.freeze_vision = train_text, freeze_vision
        for p in self.vision.parameters():
            p.requires_grad_(not freeze_vision)
        self.width, self.heads, self.r0, self.n_layers = width, heads, regions, layers
        self.nt_rule, self.decay_exempt = nt_rule, bool(decay_exempt)
        self.main_heads = supervised_heads(main_depth)
        self.nt_heads = supervised_heads(nt_depth)
        # the NT branch decides (and predict keeps the mask, writing "no_target"); without it,
        # masks under MIN_PIXELS are no target (Table VI, depth 0)
        self.decides_no_target = bool(self.nt_heads)
        self.default_min_pixels = 1 if self.nt_heads else MIN_PIXELS
        self.weights = {"bce_final": w_bce, "dice_final": w_dice, "bce_mid": w_bce_mid,
                        "dice_mid": w_dice_mid, "nt": w_nt}
        c, cl = width, self.text.dim
        grids = [regions, 2 * regions, 4 * regions, 4 * regions]
        self.grids = grids
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.pwam = nn.ModuleList([PWAM(ch, cl) for ch in self.vision.channels]) \
                if fusion == "pwam" else None
            self.pixel = PixelDecoder(self.vision.channels, c, enc_layers, enc_ffn, heads, points)
            # query generator
            self.query_feat = nn.Embedding(regions * regions, c)
            self.query_pos = nn.Embedding(regions * regions, c)
            self.qg = nn.ModuleDict({"q": nn.Linear(c, c), "norm": nn.LayerNorm(c),
                                     "k": nn.Linear(cl, c), "out": nn.Linear(c, c)}) \
                if query_generator else None
            self.qg_v = nn.Linear(cl, c)      # the language tokens L (and the QG's values)
            self.lang_pos = nn.Embedding(MAX_TOKENS, c)
            self.level_embed = nn.Embedding(3, c)
            self.mmd = nn.ModuleList([MMDLayer(c, heads, dec_ffn) for _ in range(3 * layers)])
            # RSH per head (1/32, 1/16, 1/8, 1/4); NT branch on the supervised heads only
            self.norms = nn.ModuleList([nn.LayerNorm(c) for _ in range(4)])
            self.mask_embed = nn.ModuleList([MLP(c, c, c, 3) for _ in range(4)])
            self.nt = nn.ModuleList([NoTargetHead(c, grids[k] ** 2, nt_hidden, nt_sentence)
                                     for k in self.nt_heads])
            # FPN over the three query grids
            self.fpn_lateral = nn.ModuleList([nn.Conv2d(c, c, 1, bias=False) for _ in range(3)])
            self.fpn_out = nn.ModuleList([nn.Conv2d(c, c, 3, padding=1, bias=False)
                                          for _ in range(3)])
            for m in (*self.fpn_lateral, *self.fpn_out):
                nn.init.xavier_uniform_(m.weight)

    # -------------------------------------------------------------- pieces

    def generate_queries(self, words: torch.Tensor, word_mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query generator: ``(queries (N, r0^2, C), language tokens L (N, T, C))``; without it
        (``query_generator=False``) the learnable embeddings themselves."""
        n = words.shape[0]
        lang = self.qg_v(words)
        if self.qg is None:
            return self.query_feat.weight[None].expand(n, -1, -1), lang
        q = self.qg["norm"](self.qg["q"](self.query_feat.weight))[None].expand(n, -1, -1)
        sim = torch.einsum("nqc,ntc->nqt", q, self.qg["k"](words)) / math.sqrt(self.width)
        sim = sim.masked_fill(~word_mask[:, None, :], float("-inf")).softmax(-1)
        return self.qg["out"](sim @ lang), lang

    def encode_images(self, x: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor
                      ) -> list[torch.Tensor]:
        """Visual features at strides 4, 8, 16, 32 of images ``(M, 3, S, S)``, each fused with
        its expression's words ``(M, T, C_l)`` (mask ``(M, T)``) by PWAM when ``fusion`` is
        ``pwam`` (after each stage; see :mod:`.fusion`)."""
        feats = self.vision(x)
        if self.pwam is None:
            return feats
        return [mod(f, words, word_mask) for mod, f in zip(self.pwam, feats)]

    def head(self, level: int, q: torch.Tensor, feat: torch.Tensor, r: int, lang: torch.Tensor,
             lang_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """RSH + no-target branch of one head: ``(mask logits (N, 1, H, W), nt logits (N, 2) or
        None when this head's NT branch is not supervised)``."""
        emb = self.mask_embed[level](self.norms[level](q))
        logits = regional_logits(emb, feat, r)
        if level not in self.nt_heads:
            return logits, None
        nt = self.nt[self.nt_heads.index(level)]
        return logits, nt(emb, region_means(feat, r), lang, lang_pad)

    def blocked(self, level: int, q: torch.Tensor, feat: torch.Tensor, r: int) -> torch.Tensor:
        """Cross-attention mask from the current prediction (no gradient): ``(N, Q, HW)``, True
        where a pixel is outside the query's window and predicted background."""
        with torch.no_grad():
            emb = self.mask_embed[level](self.norms[level](q))
            back = regional_logits(emb, feat, r).flatten(1) < 0        # (N, HW)
            ids = region_ids(feat.shape[-2], feat.shape[-1], r, feat.device)
            outside = ids[None, :] != torch.arange(r * r, device=feat.device)[:, None]
            return back[:, None, :] & outside[None]

    def query_fpn(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """FPN over the query grids (r0, 2 r0, 4 r0) -> refined 4 r0 x 4 r0 queries (N, Q, C)."""
        out = None
        for k, q in enumerate(grids):
            n, nq, c = q.shape
            side = math.isqrt(nq)
            g = q.transpose(1, 2).reshape(n, c, side, side)
            prev = g if out is None else out
            y = self.fpn_lateral[k](g) + F.interpolate(prev, size=(side, side), mode="bilinear",
                                                       align_corners=False)
            out = F.relu(self.fpn_out[k](y))
        return out.flatten(2).transpose(1, 2)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: with ``decay_exempt``, parameters of normalisation layers,
        embeddings and Swin's position tables get no weight decay (official train_net.py,
        build_optimizer: WEIGHT_DECAY_NORM = WEIGHT_DECAY_EMBED = 0); the rest ``weight_decay``.
        Frozen parameters are left out."""
        norms = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                 nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
                 nn.LocalResponseNorm)
        decay, exempt, seen = [], [], set()
        for mname, module in self.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                free = self.decay_exempt and (
                    isinstance(module, (*norms, nn.Embedding))
                    or any(k in f"{mname}.{pname}" for k in NO_DECAY_NAMES))
                (exempt if free else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": exempt, "weight_decay": 0.0}]

    # -------------------------------------------------------------- protocol

    def forward(self, batch: dict) -> dict:
        x = valid_rows(batch, "images")          # every image is its own sample
        words, wmask, _ = self.text.encode(batch["expression"])
        words = words.index_select(0, batch["group"])
        wmask = wmask.index_select(0, batch["group"])
        lang_pad = ~wmask
        q, lang = self.generate_queries(words, wmask)
        n, t = lang.shape[0], lang.shape[1]
        lang_pos = self.lang_pos.weight[:t][None].expand(n, -1, -1)
        q_pos = self.query_pos.weight[None].expand(n, -1, -1)
        mask_feat, scales = self.pixel(self.encode_images(x, words, wmask))
        masks, nts, grids, regions = [], [], [], []
        r = self.r0
        for s, feat in enumerate(scales):                       # 1/32, 1/16, 1/8
            h, w = feat.shape[-2:]
            vis = feat.flatten(2).transpose(1, 2)
            vis_pos = (sine_position(h, w, self.width, feat.device, feat.dtype)
                       + self.level_embed.weight[s])[None].expand(n, -1, -1)
            for k in range(self.n_layers):
                blocked = None if s == 0 and k == 0 else self.blocked(s, q, feat, r)
                q, lang = self.mmd[s * self.n_layers + k](q, q_pos, lang, lang_pos, lang_pad, vis,
                                                          vis_pos, blocked)
            m, nt = self.head(s, q, feat, r, lang, lang_pad)
            masks.append(m)
            nts.append(nt)
            grids.append(q)
            regions.append(r)
            if s < 2:
                q, q_pos = upsample_queries(q, r), upsample_queries(q_pos, r)
                r *= 2
        m, nt = self.head(3, self.query_fpn(grids), mask_feat, r, lang, lang_pad)
        masks.append(m)
        nts.append(nt)
        regions.append(r)
        return {"masks": masks, "nt": [x for x in nts if x is not None],
                "nt_heads": list(self.nt_heads), "regions": regions}

    def loss(self, out: dict, batch: dict, epoch: int = 0, epochs: int = 1) -> tuple:
        """BCE + Dice on the supervised heads, weighted cross-entropy on the supervised
        indicators (module header). Heads outside ``main_depth`` enter with weight 0 (their
        parameters stay in the graph, as DDP needs; they still drive the attention masks)."""
        y = valid_rows(batch, "masks").float()
        no_target = (~valid_rows(batch, "positive")).long()
        terms = []
        for logit in out["masks"]:
            t = nearest_target(y, logit.shape[-2:])
            terms.append((F.binary_cross_entropy_with_logits(logit.float(), t),
                          dice_loss(logit, t)))
        bce_f, dice_f = terms[-1]
        mids = [k for k in range(len(terms) - 1) if k in self.main_heads]
        unused = sum((terms[k][0] + terms[k][1]) * 0.0 for k in range(len(terms) - 1)
                     if k not in mids)
        bce_m = sum(terms[k][0] for k in mids) / max(1, len(mids))
        dice_m = sum(terms[k][1] for k in mids) / max(1, len(mids))
        cw = torch.tensor(NT_CLASS_WEIGHTS, device=y.device)
        ce = sum(F.cross_entropy(nt.float(), no_target, weight=cw, reduction="none").mean()
                 for nt in out["nt"]) / max(1, len(out["nt"]))
        w = self.weights
        total = (w["bce_final"] * bce_f + w["dice_final"] * dice_f + w["bce_mid"] * bce_m
                 + w["dice_mid"] * dice_m + w["nt"] * ce + unused)
        parts = {k: torch.as_tensor(v).detach() for k, v in
                 {"bce": bce_f, "dice": dice_f, "bce_mid": bce_m, "dice_mid": dice_m,
                  "nt": ce}.items()}
        return total, parts

    def no_target(self, out: dict) -> torch.Tensor | None:
        """Per-image no-target decision ``(M,)`` bool under ``nt_rule`` over the supervised
        indicators (in head order 1/32 ... 1/4); None without an NT branch."""
        if not out["nt"]:
            return None
        says = [nt[:, 1] > nt[:, 0] for nt in out["nt"]]
        if self.nt_rule == "first":
            return says[0]
        if self.nt_rule == "last":
            return says[-1]
        return torch.stack(says).any(0)

    def probabilities(self, out: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mask probabilities at 1/4 (M, 1, S/4, S/4), decision: True = target, or None
        without an NT branch: then ``predict`` applies :data:`MIN_PIXELS`)."""
        nt = self.no_target(out)
        return torch.sigmoid(out["masks"][-1].float()), None if nt is None else ~nt
