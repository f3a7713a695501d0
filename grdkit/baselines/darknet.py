"""Darknet's binary weights (``yolov3.weights``, ``darknet53.conv.74``) -> the state dict of
timm's ``darknet53`` that ``vision="darknet53"`` loads (``vision_weights=PATH``).

LTS §4.1 starts from a COCO-pretrained Darknet53, the backbone of MCN (luogen1996/MCN), which is
YOLOv3's. Darknet stores weights as one flat little-endian binary, read by pjreddie/darknet
``src/parser.c`` @f6afaabcdf85f77e7aff2ec55c020c0e297c77f9 (``load_weights_upto``,
``load_convolutional_weights``):

* header: ``int32 major, int32 minor, int32 revision``, then ``seen``: a ``size_t`` (uint64)
  when ``major * 10 + minor >= 2`` and both are < 1000, else an ``int32``; a major or minor
  > 1000 means transposed (connected-layer) weights, which no Darknet53 convolution has;
* then, for each convolutional layer in the order of the ``.cfg``: ``n`` biases, and when the
  layer has ``batch_normalize=1``: ``n`` scales, ``n`` rolling means, ``n`` rolling variances;
  then the ``n x c x size x size`` kernel, row-major (PyTorch's ``(out, in, kh, kw)`` order).

Darknet53's 52 convolutions all have batch normalisation (``cfg/yolov3.cfg`` @f6afaab, layers
0-74) and come first in ``yolov3.weights``; timm's ``darknet53`` holds the same 52 convolutions
in the same order (stem, then per stage ``conv_down`` and each block's ``conv1`` (1x1),
``conv2`` (3x3)), so the i-th convolution of the file maps onto the i-th ``*.conv.weight`` of
timm's state dict (``bn.bias`` = biases, ``bn.weight`` = scales, ``bn.running_mean``,
``bn.running_var``). The rest of ``yolov3.weights`` (YOLO's detection heads) is not read; the
classifier ``head.fc`` is not written (:func:`~.encoders.load_timm` accepts its absence: the
encoder prunes it).

What differs from Darknet and is not converted (disclosed): Darknet normalises with
``(x - mean) / (sqrt(var) + 1e-6)`` (``src/blas.c`` ``normalize_cpu``), PyTorch with
``(x - mean) / sqrt(var + eps)``, eps 1e-5 in timm (a relative difference below 1e-4 for
variances above 0.1). Darknet's LeakyReLU has slope 0.1 (LTS's ``leaky_slope``, default 0.1) and
its input is 0-1 RGB without mean / std (LTS's ``vision_norm="unit"``).

The output is a plain ``{name: tensor}`` dict written with ``torch.save`` (what
``vision_weights`` reads back with ``weights_only=True``: no code runs), atomically.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import atomic_write_bytes

BACKBONES = ("darknet53",)
DARKNET53_CONVS = 52     # convolutional layers of Darknet53 (cfg/yolov3.cfg layers 0-74)


def read_header(data: bytes, path: str | Path = "<weights>") -> tuple[tuple[int, int, int],
                                                                       int, int]:
    """``((major, minor, revision), seen, offset of the first weight in bytes)`` of a Darknet
    weights file (``src/parser.c`` ``load_weights_upto``; see the module header).

    Raises:
        InputError: a file shorter than its header, or a transposed-weights version.
    """
    if len(data) < 16:
        raise InputError(path, f"is {len(data)} bytes, shorter than a Darknet weights header",
                         hint="give Darknet's yolov3.weights (or darknet53.conv.74)")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000:
        if len(data) < 20:
            raise InputError(path, "ends inside its Darknet header")
        (seen,) = struct.unpack_from("<Q", data, 12)
        return (major, minor, revision), int(seen), 20
    if major > 1000 or minor > 1000:
        raise InputError(path, f"has Darknet version {major}.{minor}.{revision} (transposed "
                         "weights), which no Darknet53 file has")
    (seen,) = struct.unpack_from("<i", data, 12)
    return (major, minor, revision), int(seen), 16


def darknet53_state(data: bytes, path: str | Path = "<weights>") -> dict[str, torch.Tensor]:
    """timm ``darknet53`` state dict (without ``head.fc``) from the bytes of a Darknet weights
    file whose first 52 convolutions are Darknet53's (``yolov3.weights``,
    ``darknet53.conv.74``). Tensors are float32; ``num_batches_tracked`` is 0.

    Raises:
        InputError: a header that is not Darknet's, or a file that ends before the 52nd
            convolution (the layer and the bytes missing named).
    """
    import timm

    _, _, offset = read_header(data, path)
    template = timm.create_model("darknet53", pretrained=False).state_dict()
    convs = [k[: -len(".conv.weight")] for k in template if k.endswith(".conv.weight")]
    if len(convs) != DARKNET53_CONVS:  # a timm whose darknet53 differs: refuse, never guess
        raise InputError(None, f"timm's darknet53 has {len(convs)} convolutions, not "
                         f"{DARKNET53_CONVS}; this converter does not fit that timm version")
    state: dict[str, torch.Tensor] = {}
    floats = np.frombuffer(data, dtype="<f4", offset=offset, count=(len(data) - offset) // 4)
    pos = 0
    for i, name in enumerate(convs):
        shape = tuple(template[f"{name}.conv.weight"].shape)
        n = shape[0]
        need = 4 * n + int(np.prod(shape))
        if pos + need > floats.size:
            raise InputError(path, f"ends in convolution {i} of Darknet53 ({name}): "
                             f"{(pos + need - floats.size) * 4} bytes missing",
                             hint="give the full yolov3.weights or darknet53.conv.74")
        block = floats[pos: pos + need].astype(np.float32)
        pos += need
        for key, k in (("bn.bias", 0), ("bn.weight", 1), ("bn.running_mean", 2),
                       ("bn.running_var", 3)):
            state[f"{name}.{key}"] = torch.from_numpy(block[k * n:(k + 1) * n].copy())
        state[f"{name}.conv.weight"] = torch.from_numpy(block[4 * n:].reshape(shape).copy())
        state[f"{name}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    bad = next((k for k, v in state.items() if v.is_floating_point()
                and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise InputError(path, f"holds NaN or infinite values in {bad}")
    if any(bool((state[f"{c}.bn.running_var"] < 0).any()) for c in convs):
        raise InputError(path, "holds a negative batch-norm variance: not Darknet53's layout")
    return state


def convert(backbone: str, src: str | Path, dst: str | Path) -> dict:
    """Convert Darknet weights ``src`` to a timm state dict written at ``dst`` (``torch.save``
    of a plain dict, atomically). Returns a summary ``{"backbone", "version", "seen",
    "tensors", "parameters", "bytes_read", "bytes_total"}``.

    Raises:
        InputError: an unknown backbone, a missing / unreadable / too short file.
    """
    if backbone not in BACKBONES:
        raise InputError(None, f"unknown backbone {backbone!r}; choose from "
                         f"{', '.join(BACKBONES)}")
    p = Path(src)
    if not p.is_file():
        raise InputError(p, "Darknet weights file not found",
                         hint="download yolov3.weights (pjreddie.com/media/files/yolov3.weights)")
    data = p.read_bytes()
    version, seen, offset = read_header(data, p)
    state = darknet53_state(data, p)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(dst, buf.getvalue())
    params = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    return {"backbone": backbone, "version": ".".join(map(str, version)), "seen": seen,
            "tensors": len(state), "parameters": params,
            "bytes_read": offset + 4 * params, "bytes_total": len(data)}
