"""Integrity of COCO compressed RLE strings, checked in the RLE domain for many masks at once.

pycocotools decodes a compressed string without checking that its run lengths sum to
height*width (and ``decode`` then writes past or short of its buffer), and it exposes no way to
read the runs back without densifying. This module therefore parses the strings itself,
vectorised over all masks with numpy, following the format of pycocotools' ``rleFrString``
(maskApi.c): 6-bit groups from character value - 48, 5 payload bits each, 0x20 = more groups
follow, 0x10 in the last group = negative; from the fourth count on, each value is a delta to
the count two positions earlier.

What is accepted is exactly what pycocotools decodes to the same counts. ``rleFrString``
(cocodataset/cocoapi ``common/maskApi.c``, commit 28dffd92) computes each 5-bit group's
contribution as a C ``int`` (``(c & 0x1f) << 5*k``) and stores the count as a ``uint``: a token of
more than 6 characters shifts past 31 bits (undefined behaviour; on x86 the shift count wraps), so
C and an exact parser disagree, and counts a check sees as valid can be huge for pycocotools
(``decode`` then loops for minutes). Tokens are therefore limited to :data:`MAX_TOKEN` = 6
characters: 30 signed bits, enough for every count and delta of an image within
:data:`grdkit.io.limits.MAX_PIXELS` (2^28), and exactly what ``rleToString`` writes for them.
Within that limit, with no negative run and runs summing to h*w, both parsers give the same
counts (``tests/test_hostile.py`` checks it against a transcription of ``rleFrString`` and
pycocotools itself, with hypothesis).
"""

from __future__ import annotations

import numpy as np

CHUNK = 2048  # masks parsed per numpy pass
MAX_TOKEN = 6  # characters per number (30 signed bits); see the module header


def decode_counts(counts: list[str | bytes]) -> list[np.ndarray | None]:
    """Run lengths of each compressed counts string (None for a malformed string).

    Malformed: a character outside chr(48)..chr(111), a string ending inside a number, or a
    number longer than :data:`MAX_TOKEN` characters.
    """
    out: list[np.ndarray | None] = []
    stats = _parse(counts)
    for k in range(len(counts)):
        if stats["bad"][k]:
            out.append(None)
        else:
            a, b = stats["tok_start"][k], stats["tok_end"][k]
            out.append(stats["values"][a:b].copy())
    return out


def _parse(counts: list[str | bytes]) -> dict:
    # a non-ASCII string is malformed: map it to a character outside the alphabet (not "?",
    # which "replace" would give and which is a valid RLE character)
    raw = [(c.encode("ascii") if c.isascii() else b"\x7f") if isinstance(c, str) else bytes(c)
           for c in counts]
    lens = np.fromiter((len(r) for r in raw), dtype=np.int64, count=len(raw))
    buf = np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.int64)
    n = len(raw)
    seg_end = np.cumsum(lens)
    seg = np.repeat(np.arange(n), lens)
    bad = np.zeros(n, bool)
    c = buf - 48
    oob = (c < 0) | (c > 63)
    if oob.any():
        bad[np.unique(seg[oob])] = True
    more = (c & 0x20) != 0
    nonempty = lens > 0
    last = seg_end[nonempty] - 1
    bad[np.flatnonzero(nonempty)[more[last]]] = True  # ends inside a number
    end = ~more
    end[last] = True  # tokenise within each string even when malformed (flagged above)
    tok_of_char = np.cumsum(end) - end
    n_tok = int(end.sum())
    tok_first_char = np.flatnonzero(np.concatenate(([True], end[:-1]))) if buf.size else \
        np.zeros(0, np.int64)
    k = np.arange(buf.size) - tok_first_char[tok_of_char]
    shift = np.minimum(5 * k, 62)
    contrib = (c & 0x1F) << shift
    val = np.add.reduceat(contrib, tok_first_char) if n_tok else np.zeros(0, np.int64)
    end_idx = np.flatnonzero(end)
    neg = (c[end_idx] & 0x10) != 0
    kk = k[end_idx] + 1
    tok_seg0 = seg[end_idx]
    if (kk > MAX_TOKEN).any():  # pycocotools' C parser reads these differently
        bad[np.unique(tok_seg0[kk > MAX_TOKEN])] = True
    val = np.where(neg, val - (np.int64(1) << np.minimum(5 * kk, 62)), val)
    tok_seg = tok_seg0
    tok_per_seg = np.bincount(tok_seg, minlength=n)
    tok_end = np.cumsum(tok_per_seg)
    tok_start = tok_end - tok_per_seg
    m = np.arange(n_tok) - tok_start[tok_seg]  # index of the count within its mask
    odd = (m % 2) == 1
    even2 = (m % 2 == 0) & (m >= 2)
    values = val.copy()
    for sel in (odd, even2) if n_tok else ():  # x_m = d_m + x_{m-2} for m > 2: per parity
        cs = np.cumsum(np.where(sel, val, 0))
        base = np.where(tok_start > 0, cs[np.maximum(tok_start - 1, 0)], 0)
        values = np.where(sel, cs - base[tok_seg], values)
    return {"values": values, "tok_start": tok_start, "tok_end": tok_end, "tok_seg": tok_seg,
            "odd": odd, "bad": bad}


def check_rles(counts: list[str | bytes], sizes: list[tuple[int, int]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check many compressed RLEs at once.

    Args:
        counts: compressed counts strings.
        sizes: ``(height, width)`` of each.

    Returns:
        ``(ok, total, area)``: bool per mask (well-formed, no negative run, runs summing to
        h*w), the run-length sum and the foreground area (pixels) per mask.
    """
    n = len(counts)
    if n > CHUNK:  # bound memory: the parser holds a few int64 arrays per character
        parts = [check_rles(counts[k:k + CHUNK], sizes[k:k + CHUNK]) for k in range(0, n, CHUNK)]
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.int64)
    st = _parse(counts)
    v, seg = st["values"], st["tok_seg"]
    total = np.bincount(seg, weights=v, minlength=n).astype(np.int64)
    area = np.bincount(seg, weights=np.where(st["odd"], v, 0), minlength=n).astype(np.int64)
    negative = np.zeros(n, bool)
    if v.size:
        negative[np.unique(seg[v < 0])] = True
    hw = np.array([int(h) * int(w) for h, w in sizes], np.int64)
    ok = ~st["bad"] & ~negative & (total == hw)
    return ok, total, area


def rle_problem(counts: str | bytes, size: tuple[int, int]) -> str | None:
    """Why one compressed RLE fails :func:`check_rles` (None when it passes), in words."""
    if isinstance(counts, str) and not counts.isascii():
        return "counts hold non-ASCII characters"
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    bad = [chr(b) for b in raw if not 48 <= b <= 111]
    if bad:
        return f"counts hold {bad[0]!r}, outside the RLE alphabet chr(48)..chr(111)"
    if raw and raw[-1] - 48 >= 32:
        return "counts end inside a number"
    run = longest = 0
    for b in raw:
        run += 1
        if b - 48 < 32:
            longest, run = max(longest, run), 0
    if longest > MAX_TOKEN:
        return (f"counts hold a number of {longest} characters; at most {MAX_TOKEN} (what "
                "pycocotools writes, and reads the same way)")
    h, w = size
    ok, total, _ = check_rles([raw], [(h, w)])
    if ok[0]:
        return None
    values = decode_counts([raw])[0]
    if values is not None and (values < 0).any():
        return "counts decode to a negative run length"
    return f"runs sum to {int(total[0])}, not height*width = {int(h) * int(w)}"
