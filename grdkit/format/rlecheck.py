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

import itertools

import numpy as np

CHUNK = 256  # masks parsed per numpy pass (the passes stay in cache: ~2x faster than 2048)
MAX_TOKEN = 6  # characters per number (30 signed bits); see the module header


def decode_counts(counts: list[str | bytes]) -> list[np.ndarray | None]:
    """Run lengths of each compressed counts string (None for a malformed string).

    Malformed: a character outside chr(48)..chr(111), a string ending inside a number, or a
    number longer than :data:`MAX_TOKEN` characters.
    """
    r = parse_runs(counts)
    return [None if r.bad[k] else r.values[r.start[k]:r.start[k + 1]].copy()
            for k in range(len(counts))]


class Runs:
    """Run lengths of many compressed RLEs, concatenated (what :func:`parse_runs` returns).

    Attributes:
        values: int64 ``(T,)``: every run length (x_0 background, x_1 foreground, ...), masks
            one after the other, in input order.
        start: int64 ``(n + 1,)``: mask k's runs are ``values[start[k]:start[k + 1]]``.
        bad: bool ``(n,)``: the string is malformed (its runs are meaningless).
        fg: bool ``(T,)``: the run is foreground (odd index within its mask).
        seg: int64 ``(T,)``: the mask each run belongs to.
    """

    __slots__ = ("bad", "fg", "seg", "start", "values")

    def __init__(self, values, start, bad, fg, seg):
        self.values, self.start, self.bad, self.fg, self.seg = values, start, bad, fg, seg

    def sums(self) -> tuple[np.ndarray, np.ndarray]:
        """``(total, area)`` per mask: the run-length sum and the foreground pixels (int64)."""
        n = len(self.bad)
        cs = np.concatenate(([0], np.cumsum(self.values)))
        fcs = np.concatenate(([0], np.cumsum(np.where(self.fg, self.values, 0))))
        return cs[self.start[1:]] - cs[self.start[:-1]], \
            (fcs[self.start[1:]] - fcs[self.start[:-1]])[:n]


def _as_bytes(counts: list[str | bytes]) -> tuple[bytes, np.ndarray]:
    """The strings joined as ASCII bytes and their lengths; a non-ASCII string becomes one
    character outside the alphabet (not "?", which "replace" would give and which is a valid
    RLE character), so it is malformed."""
    n = len(counts)
    if all(type(c) is str for c in counts):
        joined = "".join(counts)
        if joined.isascii():
            return joined.encode("ascii"), np.fromiter(map(len, counts), np.int64, n)
    raw = [(c.encode("ascii") if c.isascii() else b"\x7f") if isinstance(c, str) else bytes(c)
           for c in counts]
    return b"".join(raw), np.fromiter(map(len, raw), np.int64, n)


def parse_runs(counts: list[str | bytes]) -> Runs:
    """Parse many compressed counts strings at once into their run lengths (:class:`Runs`).

    Written with numpy passes over all strings (character level in uint8, number level in
    int64) because pycocotools exposes no way to read runs back without densifying; the format
    is ``rleFrString``'s (module header).
    """
    n = len(counts)
    joined, lens = _as_bytes(counts)
    c = np.frombuffer(joined, np.uint8) - np.uint8(48)  # outside the alphabet: > 63 (wraps)
    bad = np.zeros(n, bool)
    cend = np.cumsum(lens)  # exclusive end of each string's characters
    if c.size == 0:
        z = np.zeros(0, np.int64)
        return Runs(z, np.zeros(n + 1, np.int64), bad | (lens > 0), z.astype(bool), z)
    oob = c > 63
    if oob.any():
        bad[np.searchsorted(cend, np.flatnonzero(oob), "right")] = True
    nonempty = lens > 0
    last = cend[nonempty] - 1
    end = (c & 0x20) == 0
    bad[np.flatnonzero(nonempty)[~end[last]]] = True  # ends inside a number
    end[last] = True  # tokenise within each string even when malformed (flagged above)
    tok_end = np.flatnonzero(end)
    tok_start = np.empty_like(tok_end)
    tok_start[0] = 0
    tok_start[1:] = tok_end[:-1] + 1
    c5 = c & np.uint8(0x1F)
    val = c5[tok_start].astype(np.int64)
    val -= (val & 0x10) << 1  # a one-character number: 5 bits, bit 4 the sign (value - 32)
    multi = np.flatnonzero(tok_end > tok_start)  # most numbers are one character: the rest
    if multi.size:
        ms, me = tok_start[multi], tok_end[multi]
        length = me - ms + 1
        v = c5[ms].astype(np.int64)
        for k in range(1, MAX_TOKEN):
            j = np.minimum(ms + k, me)
            v |= np.where(length > k, c5[j].astype(np.int64) << (5 * k), 0)
        long = length > MAX_TOKEN
        if long.any():  # pycocotools' C parser reads these differently
            bad[np.searchsorted(cend, me[long], "right")] = True
        sign = np.int64(1) << (5 * np.minimum(length, MAX_TOKEN))
        val[multi] = np.where((c[me] & 0x10) != 0, v - sign, v)
    start = np.zeros(n + 1, np.int64)
    start[1:] = np.searchsorted(tok_end, cend, "left")
    per = np.diff(start)
    first = np.repeat(np.arange(n), per)  # the string each number belongs to
    g = np.arange(tok_end.size)
    m = g - start[first]  # index of the number within its string
    fg = (m & 1) == 1
    # x_m = d_m + x_{m-2} for m > 2 (rleFrString): along each parity chain a cumulative sum,
    # taken over the global index's parity and rebased at each string's chain start
    cs = np.empty_like(val)
    cs[0::2] = np.cumsum(val[0::2])
    cs[1::2] = np.cumsum(val[1::2])
    base = np.zeros((n, 2), np.int64)  # per string and global parity: the sum before its chain
    st = start[:-1]
    has = per > 2
    sh = st[has]
    base[np.flatnonzero(has), sh & 1] = cs[sh]  # even m: the chain starts at m = 2
    prev = sh - 1
    ok = prev >= 0
    base[np.flatnonzero(has)[ok], prev[ok] & 1] = cs[prev[ok]]  # odd m: starts at m = 1
    val = np.where(m > 2, cs - base.ravel()[2 * first + (g & 1)], val)
    return Runs(val, start, bad, fg, first)


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
    return check_rles_runs(counts, sizes, keep=False)[:3]


def check_rles_runs(counts: list[str | bytes], sizes: list[tuple[int, int]], keep: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """:func:`check_rles`, plus (``keep``) each mask's run lengths: int32 arrays (views of one
    array per batch), so a later pass (the evaluator's intersections) need not parse again;
    meaningful only where ``ok``."""
    n = len(counts)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.int64), \
            ([] if keep else None)
    parts = []
    runs: list[np.ndarray] | None = [] if keep else None
    for k in range(0, n, CHUNK):  # bound memory and stay in cache: CHUNK masks per pass
        r = parse_runs(counts[k:k + CHUNK])
        m = len(r.bad)
        total, area = r.sums()
        negative = np.zeros(m, bool)
        if r.values.size:
            negative[r.seg[r.values < 0]] = True
        hw = np.fromiter((int(h) * int(w) for h, w in sizes[k:k + CHUNK]), np.int64, m)
        parts.append((~r.bad & ~negative & (total == hw), total, area))
        if keep:  # int32: every run of a sound mask is < 2^28 (half the memory of int64)
            v, st = r.values.astype(np.int32), r.start.tolist()
            runs.extend([v[a:b] for a, b in itertools.pairwise(st)])
    ok, total, area = (np.concatenate([p[j] for p in parts]) for j in range(3))
    return ok, total, area, runs


def runs_of(arrays: list[np.ndarray]) -> Runs:
    """:class:`Runs` of masks whose run lengths were kept (:func:`check_rles_runs`)."""
    n = len(arrays)
    lens = np.fromiter(map(len, arrays), np.int64, n)
    start = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=start[1:])
    values = np.concatenate(arrays).astype(np.int64) if n else np.zeros(0, np.int64)
    seg = np.repeat(np.arange(n), lens)
    fg = ((np.arange(values.size) - start[seg]) & 1) == 1
    return Runs(values, start, np.zeros(n, bool), fg, seg)


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
