import pytest
from helpers import gradient_frame

from patchray.shards.ingest.boxes import CropOptions, check_box, cut_crop, enlarge, filter_reason, make_crop


def test_check_box_reasons():
    assert check_box((1, 2, 10, 20), 64, 48) is None
    assert check_box((-5, -5, 10, 20), 64, 48) is None  # partly outside: padded, not skipped
    assert check_box((float("nan"), 2, 10, 20), 64, 48) == "box_not_finite"
    assert check_box((1, 2, 0, 20), 64, 48) == "box_empty"
    assert check_box((1, 2, -3, 20), 64, 48) == "box_empty"
    assert check_box((64, 2, 10, 20), 64, 48) == "box_outside_frame"
    assert check_box((-30, 2, 10, 20), 64, 48) == "box_outside_frame"


def test_cut_inside_matches_slice():
    frame = gradient_frame()
    crop = cut_crop(frame, (10, 5, 8, 12))
    assert crop.shape == (12, 8, 3)
    assert crop[0, 0, 0] == 10 and crop[0, 0, 1] == 5 and crop[-1, -1, 0] == 17 and crop[-1, -1, 1] == 16


def test_padding_zero_and_edge():
    frame = gradient_frame()
    zero = cut_crop(frame, (-3, -2, 8, 6), "zero")
    assert zero.shape == (6, 8, 3)
    assert (zero[:2] == 0).all() and (zero[:, :3] == 0).all()
    assert tuple(zero[2, 3]) == (0, 0, 77)  # frame pixel (0, 0)
    edge = cut_crop(frame, (-3, -2, 8, 6), "edge")
    assert tuple(edge[0, 0]) == tuple(frame[0, 0])
    assert tuple(edge[5, 7]) == tuple(frame[3, 4])


def test_context_margin_and_rescale():
    assert enlarge((10, 20, 10, 40), 0.25) == (7.5, 10.0, 15.0, 60.0)
    crop = make_crop(gradient_frame(), (10, 5, 10, 20), CropOptions(context=0.1, height=40))
    assert crop.size == (20, 40)  # 12x24 with the margin, then height 40


def test_filters():
    options = CropOptions(min_score=0.5, min_height=30)
    assert filter_reason((0, 0, 10, 40), 0.4, options) == "below_min_score"
    assert filter_reason((0, 0, 10, 20), 0.9, options) == "below_min_height"
    assert filter_reason((0, 0, 10, 40), None, options) is None  # no score: not filtered by score
    with pytest.raises(ValueError, match="pad"):
        CropOptions(pad="mirror")
