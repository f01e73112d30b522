"""The cost per training step of each `mtlbook.weighting` strategy.

Every strategy trains a `MultiTaskModel` with `T` regression heads on a
shared two-layer trunk; plain Keras `fit` on the same multi-output model
(same weights, same data) is the baseline. All variants live in one
process and are timed side by side (`mtlbook.bench.timing`): each repeat
runs one epoch of every variant in a shuffled order, and each variant's
time per step is divided by the baseline's in the same repeat. Gradient
methods are also divided by `MultiTaskModel` with `EqualWeighting`, which
separates their own cost (one backward pass per task, the surgery) from
`MultiTaskModel`'s.

Run it as `python -m mtlbook.bench weighting`.
"""

import sys

import numpy as np

from mtlbook.bench.timing import (
    check_int, format_ratio, interleave, print_columns, step_clock,
    summarize,
)

INPUT_DIM = 32


def strategy_factories():
    """The strategies the benchmark can time, each built for `T` tasks.

    Returns:
        dict `{name: function(num_tasks) -> strategy}`, every strategy
        with its default hyper-parameters (and a fixed seed where it has
        one).

    Example:

    ```python
    strategy = strategy_factories()["pcgrad"](num_tasks=4)
    ```
    """
    from mtlbook import weighting

    return {
        "equal": lambda num_tasks: weighting.EqualWeighting(
            num_tasks=num_tasks),
        "static": lambda num_tasks: weighting.StaticWeighting(
            [1.0] * num_tasks),
        "uncertainty": lambda num_tasks: weighting.UncertaintyWeighting(
            num_tasks=num_tasks),
        "dwa": lambda num_tasks: weighting.DynamicWeightAverage(
            num_tasks=num_tasks),
        "gradnorm": lambda num_tasks: weighting.GradNorm(
            num_tasks=num_tasks),
        "pcgrad": lambda num_tasks: weighting.PCGrad(
            seed=0, num_tasks=num_tasks),
        "mgda": lambda num_tasks: weighting.MGDA(num_tasks=num_tasks),
        "cagrad": lambda num_tasks: weighting.CAGrad(num_tasks=num_tasks),
        "imtl": lambda num_tasks: weighting.IMTLG(num_tasks=num_tasks),
        "nash_mtl": lambda num_tasks: weighting.NashMTL(num_tasks=num_tasks),
        "aligned": lambda num_tasks: weighting.AlignedMTL(
            num_tasks=num_tasks),
        "rlw": lambda num_tasks: weighting.RandomLossWeighting(
            seed=0, num_tasks=num_tasks),
        "famo": lambda num_tasks: weighting.FAMO(num_tasks=num_tasks),
    }


def build_model(num_tasks, width, strategy=None, seed=0):
    """The benchmark's model: a shared trunk and `num_tasks` heads.

    The weights come from initializers with explicit seeds, so two calls
    with the same `seed` build the same weights, and the global random
    state is neither read nor changed.

    Args:
        num_tasks: int >= 1. Regression heads `task0`, `task1`, ...
        width: int >= 1. Units of the two shared dense layers.
        strategy: optional `mtlbook.weighting` strategy; None builds a
            plain `keras.Model` (the baseline).
        seed: int. Seed of the initial weights.

    Returns:
        The compiled model (SGD, mean squared error per task).

    Example:

    ```python
    model = build_model(2, 64, strategy_factories()["pcgrad"](2))
    ```
    """
    import keras

    from mtlbook.training import MultiTaskModel

    def dense(units, name, index, activation=None):
        return keras.layers.Dense(
            units, activation=activation, name=name,
            kernel_initializer=keras.initializers.GlorotUniform(
                seed=seed + index),
        )

    inputs = keras.Input((INPUT_DIM,))
    trunk = dense(width, "trunk1", 0, "relu")(inputs)
    trunk = dense(width, "trunk2", 1, "relu")(trunk)
    names = [f"task{i}" for i in range(num_tasks)]
    outputs = {n: dense(1, n, 2 + i)(trunk) for i, n in enumerate(names)}
    if strategy is None:
        model = keras.Model(inputs, outputs)
    else:
        model = MultiTaskModel(inputs, outputs, strategy=strategy)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss={n: "mse" for n in names})
    return model


def _data(num_tasks, steps, batch_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch_size, INPUT_DIM)).astype("float32")
    y = {f"task{i}": (x[:, i % INPUT_DIM:i % INPUT_DIM + 1] * (i + 1))
         for i in range(num_tasks)}
    return x, y


def bench_weighting(tasks=(2, 4, 8), repeats=9, steps=300, batch_size=64,
                    width=256, strategies=None, out=None):
    """Times each strategy relative to plain Keras `fit`.

    For each number of tasks, plain `fit` and every strategy's
    `MultiTaskModel` train one untimed warm-up epoch (tracing), then
    `repeats` timed epochs of `steps` steps each, side by side in a
    shuffled order per repeat. The time per step is measured from the end
    of the first step to the end of the last.

    Args:
        tasks: sequence of ints >= 1, the numbers of tasks to try.
        repeats: int >= 1. Timed epochs per variant.
        steps: int >= 2. Training steps per epoch.
        batch_size: int >= 1.
        width: int >= 1. Units of the two shared dense layers.
        strategies: optional list of names from `strategy_factories()`
            (default: all).
        out: stream for the tables (default `sys.stdout`).

    Returns:
        dict with `"to_fit"`: `{(num_tasks, name): summary}` for `"keras"`
        and every strategy, the ratio of its time per step to plain
        `fit`'s; `"to_equal"`: the same for every other strategy divided by
        `"equal"` (empty when `"equal"` is not timed); `"fit_ms"`:
        `{num_tasks: median ms per step of plain fit}`. A summary is
        `mtlbook.bench.timing.summarize`'s dict: `"ratio"` (median over
        repeats), `"spread"` (half the interquartile range / median),
        `"low"`, `"high"`.

    Example:

    ```python
    results = bench_weighting(tasks=(2,), strategies=["equal", "pcgrad"])
    results["to_equal"][(2, "pcgrad")]["ratio"]
    ```
    """
    out = sys.stdout if out is None else out
    factories = strategy_factories()
    names = list(factories) if strategies is None else list(strategies)
    unknown = sorted(set(names) - set(factories))
    if unknown or not names:
        raise ValueError(
            f"`strategies` must be a non-empty list of names among "
            f"{sorted(factories)}. Received: strategies={strategies!r}"
        )
    if isinstance(tasks, (int, np.integer)) or not len(tasks):
        raise ValueError(
            "`tasks` must be a non-empty sequence of ints >= 1. "
            f"Received: tasks={tasks!r}"
        )
    tasks = [check_int("tasks", t, 1) for t in tasks]
    repeats = check_int("repeats", repeats, 1)
    steps = check_int("steps", steps, 2)
    batch_size = check_int("batch_size", batch_size, 1)
    width = check_int("width", width, 1)
    results = {"to_fit": {}, "to_equal": {}, "fit_ms": {}}
    for num_tasks in tasks:
        x, y = _data(num_tasks, steps, batch_size)
        models = {"keras": build_model(num_tasks, width)}
        for name in names:
            models[name] = build_model(
                num_tasks, width, factories[name](num_tasks))
        clock = step_clock()

        def epoch(model):
            model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False,
                      verbose=0, callbacks=[clock])
            return clock.seconds_per_step()

        for model in models.values():  # tracing and warm-up
            epoch(model)
        times = interleave(
            {name: (lambda m=model: epoch(m)) for name, model in
             models.items()}, repeats)
        for name in models:
            results["to_fit"][(num_tasks, name)] = summarize(
                times[name], times["keras"])
            if "equal" in models and name not in ("keras", "equal"):
                results["to_equal"][(num_tasks, name)] = summarize(
                    times[name], times["equal"])
        results["fit_ms"][num_tasks] = float(np.median(times["keras"]) * 1e3)
    _print_tables(results, tasks, names, repeats, out)
    return results


def _print_tables(results, tasks, names, repeats, out):
    header = ["strategy"] + [f"T={t}" for t in tasks]
    print(f"time per training step: median ratio over {repeats} repeats "
          "± spread (half the interquartile range / median)", file=out)
    print("\nratio to plain Keras fit on the same multi-output model",
          file=out)
    rows = [[name] + [format_ratio(results["to_fit"][(t, name)])
                      for t in tasks]
            for name in ["keras", *names]]
    rows.append(["fit ms/step"]
                + [f"{results['fit_ms'][t]:.3f}" for t in tasks])
    print_columns([header, *rows], out)
    others = [n for n in names if n != "equal"]
    if not results["to_equal"] or not others:
        return
    print("\nratio to MultiTaskModel + EqualWeighting (the cost of the "
          "strategy itself)", file=out)
    rows = [[name] + [format_ratio(results["to_equal"][(t, name)])
                      for t in tasks]
            for name in others]
    print_columns([header, *rows], out)
