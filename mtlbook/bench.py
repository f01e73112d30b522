"""Timed comparisons, printed as tables: `python -m mtlbook.bench <name>`.

Subcommands:

- `weighting`: time per training step of every `mtlbook.weighting`
  strategy in `MultiTaskModel`, divided by the time of plain Keras `fit`
  on the same multi-output model, for several numbers of tasks. All
  variants are timed side by side in one process, each repeat in a
  shuffled order, and the table reports the median ratio over repeats.

Example:

```
python -m mtlbook.bench weighting            # T = 2, 4, 8
python -m mtlbook.bench weighting --quick    # seconds, for smoke tests
```

Timings on a shared machine are noisy; compare ratios, not seconds.
"""

import argparse
import sys
import time

import numpy as np


def _strategies():
    from mtlbook import weighting

    return {
        "equal": weighting.EqualWeighting,
        "static": lambda: weighting.StaticWeighting([1.0] * _STATE["tasks"]),
        "uncertainty": weighting.UncertaintyWeighting,
        "dwa": weighting.DynamicWeightAverage,
        "gradnorm": weighting.GradNorm,
        "pcgrad": weighting.PCGrad,
        "mgda": weighting.MGDA,
        "cagrad": weighting.CAGrad,
    }


_STATE = {"tasks": 2}


def _build(num_tasks, width, strategy=None, seed=0):
    import keras

    from mtlbook.training import MultiTaskModel

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32,))
    trunk = keras.layers.Dense(width, activation="relu", name="trunk1")(inputs)
    trunk = keras.layers.Dense(width, activation="relu", name="trunk2")(trunk)
    names = [f"task{i}" for i in range(num_tasks)]
    outputs = {n: keras.layers.Dense(1, name=n)(trunk) for n in names}
    losses = {n: "mse" for n in names}
    if strategy is None:
        model = keras.Model(inputs, outputs)
    else:
        model = MultiTaskModel(inputs, outputs, strategy=strategy)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=losses)
    return model


def _data(num_tasks, steps, batch_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch_size, 32)).astype("float32")
    y = {f"task{i}": (x[:, i % 32:i % 32 + 1] * (i + 1)).astype("float32")
         for i in range(num_tasks)}
    return x, y


def _time_fit(model, x, y, batch_size):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    steps = len(x) // batch_size
    return (time.perf_counter() - start) / steps


def bench_weighting(tasks=(2, 4, 8), repeats=5, steps=200, batch_size=64,
                    width=256, strategies=None, out=None):
    """Times each strategy relative to plain Keras `fit`.

    Args:
        tasks: numbers of tasks to try.
        repeats: timed repeats per variant (the median is reported).
        steps: training steps per timed epoch.
        batch_size: int.
        width: units of the two shared dense layers.
        strategies: optional list of strategy names (default: all).
        out: stream for the table (default `sys.stdout`).

    Returns:
        dict `{(num_tasks, name): median ratio}`; `"keras"` is 1.
    """
    out = sys.stdout if out is None else out
    factories = _strategies()
    names = list(factories) if strategies is None else list(strategies)
    unknown = sorted(set(names) - set(factories))
    if unknown:
        raise ValueError(
            f"`strategies` must be among {sorted(factories)}. "
            f"Received unknown names: {unknown}"
        )
    rng = np.random.default_rng(0)
    results = {}
    for num_tasks in tasks:
        _STATE["tasks"] = num_tasks
        x, y = _data(num_tasks, steps, batch_size)
        models = {"keras": _build(num_tasks, width)}
        for name in names:
            models[name] = _build(num_tasks, width, factories[name]())
        for model in models.values():  # trace and warm up once
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        times = {name: [] for name in models}
        for _ in range(repeats):
            for name in rng.permutation(list(models)):
                times[name].append(
                    _time_fit(models[name], x, y, batch_size)
                )
        # ratio per repeat, then the median over repeats
        base = np.array(times["keras"])
        for name in models:
            results[(num_tasks, name)] = float(
                np.median(np.array(times[name]) / base)
            )
        results[(num_tasks, "keras_ms")] = float(np.median(base) * 1e3)
    _print_table(results, tasks, ["keras", *names], out)
    return results


def _print_table(results, tasks, names, out):
    header = ["strategy"] + [f"T={t}" for t in tasks]
    rows = [[name] + [f"{results[(t, name)]:.2f}" for t in tasks]
            for name in names]
    rows.append(["keras ms/step"]
                + [f"{results[(t, 'keras_ms')]:.2f}" for t in tasks])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in
              range(len(header))]
    print("time per training step / plain Keras fit (median of repeats)",
          file=out)
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)), file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mtlbook.bench", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    weighting = commands.add_parser(
        "weighting", help="MultiTaskModel strategies vs plain Keras fit"
    )
    weighting.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 8])
    weighting.add_argument("--repeats", type=int, default=5)
    weighting.add_argument("--steps", type=int, default=200)
    weighting.add_argument("--width", type=int, default=256)
    weighting.add_argument("--batch-size", type=int, default=64)
    weighting.add_argument("--strategies", nargs="+", default=None)
    weighting.add_argument(
        "--quick", action="store_true",
        help="tiny run (T=2, 1 repeat, 3 steps) for smoke tests",
    )
    args = parser.parse_args(argv)
    if args.command == "weighting":
        if args.quick:
            args.tasks, args.repeats, args.steps, args.width = [2], 1, 3, 16
        return bench_weighting(
            tasks=args.tasks, repeats=args.repeats, steps=args.steps,
            batch_size=args.batch_size, width=args.width,
            strategies=args.strategies,
        )
    return None


if __name__ == "__main__":
    main()
