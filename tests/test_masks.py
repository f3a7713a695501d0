"""Masks: pycocotools conversions checked against plain numpy and hand-computed values."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grdkit import masks


def column_major_runs(mask: np.ndarray) -> list[int]:
    """Independent uncompressed-RLE encoder: alternating 0/1 run lengths, column-major."""
    flat = mask.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return runs


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_uncompressed_rle_round_trip_matches_dense(h, w, seed):
    m = (np.random.default_rng(seed).random((h, w)) < 0.4).astype(np.uint8)
    rle = masks.to_rle({"size": [h, w], "counts": column_major_runs(m)}, h, w)
    assert isinstance(rle["counts"], str)
    np.testing.assert_array_equal(masks.decode(rle), m)
    assert masks.area(rle) == int(m.sum())
    np.testing.assert_array_equal(masks.decode(masks.encode(m)), m)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10), st.integers(1, 10), st.integers(0, 2**31 - 1))
def test_union_and_intersection_match_numpy(h, w, seed):
    rng = np.random.default_rng(seed)
    a, b, c = ((rng.random((h, w)) < 0.3).astype(np.uint8) for _ in range(3))
    u = masks.union([masks.encode(a), masks.encode(b), masks.encode(c)])
    np.testing.assert_array_equal(masks.decode(u), a | b | c)
    i = masks.intersection(masks.encode(a), masks.encode(b))
    np.testing.assert_array_equal(masks.decode(i), a & b)


def test_polygon_square_hand_computed():
    # pycocotools rasterises the closed square 0..10 to the 10x10 pixel block (pinned).
    rle = masks.to_rle([[0, 0, 10, 0, 10, 10, 0, 10]], 20, 30)
    m = masks.decode(rle)
    assert m.shape == (20, 30) and m.dtype == np.uint8
    assert masks.area(rle) == 100
    assert m[:10, :10].all() and m[10:, :].sum() == 0 and m[:, 10:].sum() == 0


def test_multi_part_polygon_is_union_of_parts():
    a = [0, 0, 4, 0, 4, 4, 0, 4]
    b = [10, 10, 16, 10, 16, 16, 10, 16]
    both = masks.decode(masks.to_rle([a, b], 20, 20))
    sep = masks.decode(masks.to_rle([a], 20, 20)) | masks.decode(masks.to_rle([b], 20, 20))
    np.testing.assert_array_equal(both, sep)
    assert both.sum() == 16 + 36


def test_compressed_rle_passes_through_and_bytes_counts_accepted():
    m = np.zeros((5, 6), np.uint8)
    m[1:3, 2:5] = 1
    rle = masks.encode(m)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert masks.to_rle(as_bytes, 5, 6) == rle


def test_empty_rle():
    e = masks.empty_rle(480, 640)
    assert e["size"] == [480, 640] and masks.area(e) == 0
    assert masks.decode(e).shape == (480, 640) and not masks.decode(e).any()
    assert e == masks.encode(np.zeros((480, 640)))


@pytest.mark.parametrize("seg, msg", [
    ([[1, 1, 5, 5]], "at least 3"),             # pycocotools would read this as a bbox
    ([[1, 1, 5, 5, 9]], "odd number"),
    ([[1, 1, 5, 5, float("nan"), 2]], "non-finite"),
    ([], "no parts"),
    ({"size": [4, 4], "counts": [3, 3]}, "sum to 6"),
    ({"size": [5, 4], "counts": "abc"}, "differs from the image size"),
    ("oops", "unknown segmentation"),
])
def test_bad_segmentations_raise(seg, msg):
    with pytest.raises(masks.MaskError, match=msg):
        masks.to_rle(seg, 4, 4)


def test_zero_image_size_raises():
    with pytest.raises(masks.MaskError, match="not positive"):
        masks.to_rle([[0, 0, 1, 0, 1, 1]], 0, 4)
