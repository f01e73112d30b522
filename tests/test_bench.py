"""Smoke tests of `python -m mtlbook.bench` (no timing assertions)."""

import io
import subprocess
import sys

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


SCALING_TINY = dict(repeats=1, steps=2, batch_size=8, image_size=8, width=2)


def test_scaling_returns_a_ratio_per_configuration():
    out = io.StringIO()
    names = ["tf.data", "cache-parallel-map", "xla", "mixed_float16"]
    results = bench.bench_scaling(names, out=out, **SCALING_TINY)
    assert list(results["rows"]) == ["arrays", *names]
    assert results["rows"]["arrays"]["ratio"] == 1.0
    for row in results["rows"].values():
        assert row["ratio"] > 0 and row["low"] <= row["ratio"] <= row["high"]
    assert results["device"] and results["baseline_ms"] > 0
    text = out.getvalue()
    assert "device:" in text and all(name in text for name in names)
    # the run leaves the global dtype policy as it found it
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("argument, value", [
    ("repeats", 0), ("steps", 1), ("batch_size", 1), ("image_size", 2),
    ("width", 1.5),
])
def test_scaling_bad_sizes_raise(argument, value):
    with pytest.raises(ValueError, match=argument):
        bench.bench_scaling(["tf.data"], **{**SCALING_TINY, argument: value})


def test_scaling_unknown_configuration_raises():
    with pytest.raises(ValueError, match="configurations"):
        bench.bench_scaling(["tpu"], **SCALING_TINY)


def test_scaling_mirrored_without_two_devices_raises():
    import tensorflow as tf

    tf.config.list_logical_devices("CPU")  # starts TF: too late to split
    if (len(tf.config.list_logical_devices("CPU")) >= 2
            or tf.config.list_logical_devices("GPU")):
        pytest.skip("this process already has two devices")
    with pytest.raises(RuntimeError, match="two devices"):
        bench.bench_scaling(["mirrored"], **SCALING_TINY)


def test_split_cpu_bad_count_raises():
    with pytest.raises(ValueError, match="num_devices"):
        bench.split_cpu(0)


def test_cli_scaling_quick_with_mirrored_strategy():
    # a fresh process: logical CPU devices exist only before TF starts
    result = subprocess.run(
        [sys.executable, "-m", "mtlbook.bench", "scaling", "--quick",
         "--configurations", "mirrored"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mirrored" in result.stdout and "CPU:0 + CPU:1" in result.stdout


def test_cli_scaling_rejects_unknown_configuration():
    with pytest.raises(SystemExit):
        bench.main(["scaling", "--configurations", "tpu"])
