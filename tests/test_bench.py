"""Smoke tests of `python -m mtlbook.bench` (no timing assertions)."""

import io
import json
import pathlib
import random
import subprocess
import sys

import keras
import numpy as np
import pytest

from mtlbook import bench
from mtlbook.bench import scaling, timing, weighting

PACKAGE = pathlib.Path(bench.__file__).parents[1]


# ------------------------------------------------------------------ timing
def test_summarize_by_hand():
    summary = timing.summarize([1.0, 2.0, 3.0, 4.0, 5.0], [1.0] * 5)
    # quartiles 2 and 4: half the interquartile range is 1, median 3
    assert summary == {"ratio": 3.0, "spread": pytest.approx(1 / 3),
                       "low": 1.0, "high": 5.0}
    assert timing.format_ratio(summary) == "3.00 ±33.3 %"


def test_summarize_divides_within_each_repeat():
    # the baseline slows down with the variant: the ratio does not move
    summary = timing.summarize([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert summary["ratio"] == 2.0 and summary["spread"] == 0.0


def test_summarize_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        timing.summarize([1.0, 2.0], [1.0])


def test_interleave_runs_every_variant_once_per_repeat():
    calls = []
    variants = {name: (lambda n=name: calls.append(n) or 1.0)
                for name in "abcd"}
    times = timing.interleave(variants, repeats=5)
    assert {name: len(t) for name, t in times.items()} == dict.fromkeys(
        "abcd", 5)
    repeats = [calls[i:i + 4] for i in range(0, 20, 4)]
    assert all(sorted(r) == list("abcd") for r in repeats)
    assert len({tuple(r) for r in repeats}) > 1  # the order is shuffled


@pytest.mark.parametrize("value", [0, 1.5, "3", True])
def test_check_int_raises(value):
    with pytest.raises(ValueError, match="`steps` must be an int >= 1"):
        timing.check_int("steps", value, 1)


# --------------------------------------------------------------- weighting
def test_weighting_prints_ratios_with_their_spread():
    out = io.StringIO()
    results = bench.bench_weighting(
        tasks=(2,), repeats=2, steps=3, batch_size=8, width=8,
        strategies=["equal", "pcgrad"], out=out,
    )
    text = out.getvalue()
    assert "T=2" in text and "pcgrad" in text and "keras" in text
    assert "interquartile" in text and " %" in text
    assert "ratio to MultiTaskModel + EqualWeighting" in text
    assert results["to_fit"][(2, "keras")]["ratio"] == 1.0
    for key in [(2, "equal"), (2, "pcgrad")]:
        summary = results["to_fit"][key]
        assert summary["ratio"] > 0 and summary["spread"] >= 0
        assert timing.format_ratio(summary) in text
    assert list(results["to_equal"]) == [(2, "pcgrad")]
    assert results["fit_ms"][2] > 0


def test_weighting_without_equal_prints_one_table():
    out = io.StringIO()
    results = bench.bench_weighting(tasks=(2,), repeats=1, steps=2,
                                    batch_size=4, width=4,
                                    strategies=["static"], out=out)
    assert results["to_equal"] == {}
    assert "EqualWeighting" not in out.getvalue()


def test_strategy_factories_train_for_the_given_number_of_tasks():
    x, y = weighting._data(3, steps=1, batch_size=4)
    for name, factory in weighting.strategy_factories().items():
        model = weighting.build_model(3, 4, factory(3))
        history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1]), name


def test_build_model_leaves_the_global_random_state_alone():
    keras.utils.set_random_seed(123)
    expected = (random.random(), np.random.random(),
                float(keras.random.uniform(())))
    keras.utils.set_random_seed(123)
    first = weighting.build_model(2, 8, seed=5)
    assert (random.random(), np.random.random(),
            float(keras.random.uniform(()))) == expected
    again = weighting.build_model(2, 8, seed=5)
    other = weighting.build_model(2, 8, seed=6)
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.get_weights()[0],
                              other.get_weights()[0])


def test_unknown_strategy_raises():
    with pytest.raises(ValueError, match="strategies"):
        bench.bench_weighting(tasks=(2,), strategies=["nope"])


@pytest.mark.parametrize("argument, value", [
    ("tasks", ()), ("tasks", 2), ("tasks", (2, 0)), ("repeats", 0),
    ("steps", 1), ("batch_size", 0), ("width", 2.5),
])
def test_weighting_bad_sizes_raise(argument, value):
    with pytest.raises(ValueError, match=argument):
        bench.bench_weighting(**{"tasks": (2,), argument: value})


# --------------------------------------------------------------------- cli
def test_cli_requires_a_subcommand():
    with pytest.raises(SystemExit):
        bench.main([])


def test_cli_quick(capsys):
    bench.main(["weighting", "--quick", "--strategies", "equal"])
    out = capsys.readouterr().out
    assert "equal" in out and "±" in out


@pytest.mark.parametrize("argv", [
    ["weighting", "--repeats", "0"], ["weighting", "--steps", "x"],
    ["weighting", "--strategies", "nope"], ["scaling", "--steps", "1"],
    ["scaling", "--configurations", "tpu"], ["scaling", "--one", "tpu"],
])
def test_cli_bad_arguments_exit_with_a_message(argv, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert f"argument {argv[1]}" in capsys.readouterr().err


# ----------------------------------------------------------------- scaling
SCALING_TINY = dict(repeats=2, steps=2, batch_size=8, image_size=8, width=2)


@pytest.fixture(scope="module")
def scaling_run():
    import tensorflow as tf

    devices = tf.config.list_logical_devices()
    out = io.StringIO()
    names = ["cache-parallel-map", "xla", "mixed_float16", "mirrored"]
    results = bench.bench_scaling(names, out=out, **SCALING_TINY)
    return names, results, out.getvalue(), devices


def test_scaling_returns_a_ratio_per_configuration(scaling_run):
    names, results, text, _ = scaling_run
    assert list(results["rows"]) == ["arrays", *names]
    assert results["rows"]["arrays"]["ratio"] == 1.0
    for row in results["rows"].values():
        assert row["ratio"] > 0 and row["low"] <= row["ratio"] <= row["high"]
        assert row["spread"] >= 0 and timing.format_ratio(row) in text
    assert results["device"] and results["baseline_ms"] > 0
    assert "device:" in text and all(name in text for name in names)


def test_scaling_mirrored_runs_in_its_own_process(scaling_run):
    import tensorflow as tf

    _, results, _, devices = scaling_run
    if len(tf.config.list_physical_devices("GPU")) < 2:
        assert results["rows"]["mirrored"]["devices"] == "CPU:0 + CPU:1"
    # the caller's TensorFlow is untouched: same devices, same policy
    assert tf.config.list_logical_devices() == devices
    assert keras.mixed_precision.global_policy().name == "float32"


def test_scaling_process_protocol():
    command = [sys.executable, "-m", "mtlbook.bench", "scaling", "--one",
               "arrays", "--steps", "2", "--batch-size", "8",
               "--image-size", "8", "--width", "2"]
    result = subprocess.run(
        command, input="epoch\nepoch\n", capture_output=True, text=True,
        timeout=300, env=scaling._worker_environment(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    replies = [json.loads(line) for line in result.stdout.splitlines()]
    assert replies[0]["ready"] is True and replies[0]["devices"] == "default"
    assert len(replies) == 3
    assert all(r["seconds_per_step"] > 0 for r in replies[1:])


def test_scaling_process_failure_raises_with_its_stderr():
    worker = scaling._Worker("arrays", 2, 8, 8, 2)
    try:
        assert worker.reply()["ready"] is True
        worker.process.stdin.write(b"train\n")
        worker.process.stdin.flush()
        with pytest.raises(RuntimeError, match="Requests must be lines"):
            worker.reply()
    finally:
        worker.close()


@pytest.mark.parametrize("argument, value", [
    ("repeats", 0), ("steps", 1), ("batch_size", 1), ("image_size", 2),
    ("width", 1.5),
])
def test_scaling_bad_sizes_raise(argument, value):
    with pytest.raises(ValueError, match=argument):
        bench.bench_scaling(["tf.data"], **{**SCALING_TINY, argument: value})


@pytest.mark.parametrize("configurations", [["tpu"], "xla"])
def test_scaling_bad_configurations_raise(configurations):
    with pytest.raises(ValueError, match="configurations"):
        bench.bench_scaling(configurations, **SCALING_TINY)


def test_serve_unknown_configuration_raises():
    with pytest.raises(ValueError, match="name"):
        scaling.serve("tpu", 2, 8, 8, 2, io.StringIO(), io.StringIO())


def test_split_cpu_bad_count_raises():
    with pytest.raises(ValueError, match="num_devices"):
        scaling.split_cpu(0)


# -------------------------------------------------------------- the source
def _sources():
    return sorted((PACKAGE / "mtlbook").rglob("*.py"))


def test_bench_has_no_mutable_module_state():
    for path in sorted((PACKAGE / "mtlbook" / "bench").glob("*.py")):
        assert "_STATE" not in path.read_text(), path.name
    assert not (PACKAGE / "mtlbook" / "bench.py").exists()


def test_mtlbook_imports_no_private_tensorflow_api():
    found = [path.relative_to(PACKAGE).as_posix() for path in _sources()
             if "tensorflow.python" in path.read_text()]
    assert found == []


def test_bench_never_reseeds_the_global_random_state():
    for path in sorted((PACKAGE / "mtlbook" / "bench").glob("*.py")):
        assert "set_random_seed" not in path.read_text(), path.name
