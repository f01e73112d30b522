"""Smoke tests of `python -m mtlbook.bench` (no timing assertions)."""

import io

import pytest

from mtlbook import bench


def test_weighting_quick_prints_a_table():
    out = io.StringIO()
    results = bench.bench_weighting(
        tasks=(2,), repeats=1, steps=2, batch_size=8,
        strategies=["equal", "pcgrad"], out=out,
    )
    text = out.getvalue()
    assert "T=2" in text and "pcgrad" in text and "keras" in text
    assert results[(2, "keras")] == 1.0
    assert results[(2, "pcgrad")] > 0


def test_unknown_strategy_raises():
    with pytest.raises(ValueError, match="strategies"):
        bench.bench_weighting(tasks=(2,), strategies=["nope"])


def test_cli_requires_a_subcommand():
    with pytest.raises(SystemExit):
        bench.main([])


def test_cli_quick(capsys):
    bench.main(["weighting", "--quick", "--strategies", "equal"])
    assert "equal" in capsys.readouterr().out
