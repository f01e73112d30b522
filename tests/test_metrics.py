import math

import numpy as np
import pytest
from scipy import stats

from mtlbook.metrics import delta_m, paired_difference


def test_delta_m_by_hand():
    # digit: (0.95 - 0.90) / 0.90 = +5.556 %; size (lower is better):
    # -(0.20 - 0.25) / 0.25 = +20 %; mean 12.778 %.
    value = delta_m({"digit": 0.95, "size": 0.20},
                    {"digit": 0.90, "size": 0.25}, lower_is_better={"size"})
    assert value == pytest.approx((100 * 0.05 / 0.90 + 20.0) / 2)
    # All tasks equal to their baselines: zero.
    assert delta_m({"a": 3.0}, {"a": 3.0}) == 0.0
    # A worse loss counts against: 0.30 vs 0.25 is -20 %.
    assert delta_m({"l": 0.30}, {"l": 0.25}, "l") == pytest.approx(-20.0)
    # Higher-is-better metric below baseline counts against too.
    assert delta_m({"acc": 0.8}, {"acc": 1.0}) == pytest.approx(-20.0)


def test_delta_m_rejects_bad_input():
    with pytest.raises(TypeError, match="`results`"):
        delta_m([0.9], {"a": 0.9})
    with pytest.raises(TypeError, match="`baselines`"):
        delta_m({"a": 0.9}, {})
    with pytest.raises(ValueError, match="same tasks"):
        delta_m({"a": 0.9}, {"b": 0.9})
    with pytest.raises(ValueError, match="`lower_is_better`.*'c'"):
        delta_m({"a": 0.9}, {"a": 0.9}, lower_is_better={"c"})
    with pytest.raises(ValueError, match="nonzero"):
        delta_m({"a": 0.9}, {"a": 0.0})
    with pytest.raises(ValueError, match=r"results\['a'\].*finite"):
        delta_m({"a": math.nan}, {"a": 0.9})
    with pytest.raises(ValueError, match="finite"):
        delta_m({"a": "0.9"}, {"a": 0.9})
    with pytest.raises(ValueError, match="finite"):
        delta_m({"a": True}, {"a": 0.9})
    with pytest.raises(ValueError, match=r"baselines\['a'\].*finite"):
        delta_m({"a": 0.9}, {"a": math.inf})
    with pytest.raises(TypeError, match="`lower_is_better`"):
        delta_m({"a": 0.9}, {"a": 0.9}, lower_is_better=5)
    with pytest.raises(TypeError, match="`lower_is_better`"):
        delta_m({"a": 0.9}, {"a": 0.9}, lower_is_better=True)
    with pytest.raises(TypeError, match="`lower_is_better`"):
        delta_m({"a": 0.9}, {"a": 0.9}, lower_is_better=[1])


def test_paired_difference_by_hand():
    a, b = [0.91, 0.93, 0.92, 0.95], [0.90, 0.90, 0.91, 0.92]
    d = np.subtract(a, b)  # 0.01, 0.03, 0.01, 0.03
    result = paired_difference(a, b)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert result.n == 4
    assert result.mean == pytest.approx(0.02)
    assert (result.low, result.high) == pytest.approx(
        (0.02 - half, 0.02 + half))
    assert result.excludes_zero()
    # Identical shifts: zero width; a noisy pair does not exclude zero.
    assert paired_difference([1, 2, 3], [0, 1, 2])[:3] == (1.0, 1.0, 1.0)
    assert not paired_difference([1, -1, 1], [0, 0, 0]).excludes_zero()
    wider = paired_difference(a, b, confidence=0.99)
    assert wider.low < result.low and wider.high > result.high


def test_paired_difference_rejects_bad_input():
    with pytest.raises(ValueError, match="lengths 3 and 2"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([1], [2])
    with pytest.raises(ValueError, match="`confidence`"):
        paired_difference([1, 2], [1, 2], confidence=95)
    with pytest.raises(TypeError, match="`a`"):
        paired_difference(["x", "y"], [1, 2])
    with pytest.raises(ValueError, match="`b` must be finite"):
        paired_difference([1, 2], [1, math.inf])
    with pytest.raises(ValueError, match="`a` must be finite"):
        paired_difference([math.nan, 2], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="1-D"):
        paired_difference([[1, 2], [3, 4]], [[1, 2], [3, 4]])
    for confidence in (True, math.nan, 0.0, "0.95"):
        with pytest.raises(ValueError, match="`confidence`"):
            paired_difference([1, 2], [1, 2], confidence=confidence)
