"""Timed comparisons, printed as tables: `python -m mtlbook.bench <name>`.

Subcommands:

- `weighting`: time per training step of every `mtlbook.weighting`
  strategy in `MultiTaskModel`, divided by the time of plain Keras `fit`
  on the same multi-output model, for several numbers of tasks. All
  variants are timed side by side in one process, each repeat in a
  shuffled order, and the table reports the median ratio over repeats.

- `scaling`: time per training step of a small two-task CNN under the
  tools of the "Scaling up" chapter, divided by the time of `fit` on
  NumPy arrays (float32, no XLA, one device): `tf.data` pipelines
  (cache / shuffle / prefetch, a per-example PNG decode + augmentation
  map, serial, parallel, and decode-cache-then-augment), `jit_compile=True`
  (XLA), the `mixed_float16` policy, and `tf.distribute.MirroredStrategy`
  over two devices (two GPUs, or the CPU split into two logical devices).

Example:

```
python -m mtlbook.bench weighting            # T = 2, 4, 8
python -m mtlbook.bench weighting --quick    # seconds, for smoke tests
python -m mtlbook.bench scaling              # all configurations
python -m mtlbook.bench scaling --quick
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
    print("time per training step / plain Keras fit (median of repeats)",
          file=out)
    _print_columns([header, *rows], out)


def _print_columns(rows, out):
    """Prints rows of strings as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(),
              file=out)


# ------------------------------------------------------------------ scaling
SCALING_CONFIGURATIONS = {
    "arrays": "fit on NumPy arrays (baseline)",
    "tf.data": "from_tensor_slices > cache > shuffle > batch > prefetch",
    "map": "PNG decode + augment per example, serial map",
    "parallel-map": "PNG decode + augment, num_parallel_calls=AUTOTUNE",
    "cache-parallel-map": "decode > cache > shuffle > parallel augment",
    "xla": "NumPy arrays, compile(jit_compile=True)",
    "mixed_float16": "NumPy arrays, mixed_float16 policy",
    "mirrored": "NumPy arrays, MirroredStrategy on 2 devices",
}


def split_cpu(num_devices=2):
    """Splits the first physical CPU into `num_devices` logical devices.

    Works only before TensorFlow initialises its devices (before the first
    op); afterwards the existing configuration is kept.

    Args:
        num_devices: int >= 1.

    Returns:
        list of the logical CPU device names now available.
    """
    import tensorflow as tf

    if not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(
            "`num_devices` must be a positive int. "
            f"Received: num_devices={num_devices!r}"
        )
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is None or len(current) < num_devices:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
            )
        except RuntimeError:  # devices already initialised: keep them
            pass
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _mirrored_devices():
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if len(gpus) >= 2:
        return gpus
    cpus = split_cpu(2)
    if len(cpus) < 2:
        raise RuntimeError(
            "The `mirrored` configuration needs two devices: two GPUs, or "
            "the CPU split into two logical devices before TensorFlow "
            "initialises (call `mtlbook.bench.split_cpu(2)` or "
            "`tf.config.set_logical_device_configuration` first thing). "
            f"Received: GPUs={gpus}, CPUs={cpus}"
        )
    return cpus[:2]


def _device_description():
    import os

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} GPU ({details.get('device_name', 'unknown')})"
    logical = len(tf.config.list_logical_devices("CPU"))
    return (f"CPU only: {os.cpu_count()} cores, {logical} logical CPU "
            f"device(s), TensorFlow {tf.__version__}")


def _scaling_data(steps, batch_size, image_size):
    from mtlbook.data import load_digits

    x, y = load_digits(image_size=image_size, test_fraction=0.1)["train"]
    count = steps * batch_size
    index = np.arange(count) % len(x)
    x = x[index]
    y = {task: labels[index] for task, labels in y.items()}
    return x, y


def _scaling_model(image_size, width, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 1))
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(
        inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(2 * width, 3, padding="same",
                            activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(4 * width, activation="relu")(h)
    # the heads stay float32 under mixed precision
    outputs = {
        "digit": keras.layers.Dense(10, name="digit", dtype="float32")(h),
        "parity": keras.layers.Dense(2, name="parity", dtype="float32")(h),
    }
    model = keras.Model(inputs, outputs)
    return model


def _compile_scaling(model, jit_compile=False):
    import keras

    loss = {t: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            for t in ("digit", "parity")}
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss,
                  jit_compile=jit_compile)
    return model


def _pipelines(x, y, batch_size, image_size):
    """`{name: tf.data.Dataset}` for the input-pipeline configurations."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    pixels = np.round(x * 255).astype("uint8")
    encoded = [tf.io.encode_png(image).numpy() for image in pixels]

    def decode(png, labels):
        image = tf.io.decode_png(png, channels=1)
        image = tf.cast(image, tf.float32) / 255.0
        image.set_shape((image_size, image_size, 1))
        return image, labels

    def augment(example, seed):
        image, labels = example
        padded = tf.pad(image, [[2, 2], [2, 2], [0, 0]])
        image = tf.image.stateless_random_crop(
            padded, (image_size, image_size, 1), seed)
        image = tf.image.stateless_random_brightness(image, 0.1, seed)
        return image, labels

    def with_seeds(dataset):
        seeds = tf.data.Dataset.random(
            seed=0, rerandomize_each_iteration=True).batch(2)
        return tf.data.Dataset.zip((dataset, seeds))

    count = len(x)
    files = tf.data.Dataset.from_tensor_slices((encoded, y))
    serial = with_seeds(files.shuffle(count, seed=0).map(decode)).map(
        augment)
    parallel = with_seeds(
        files.shuffle(count, seed=0).map(decode, num_parallel_calls=autotune)
    ).map(augment, num_parallel_calls=autotune)
    cached = with_seeds(
        files.map(decode, num_parallel_calls=autotune).cache()
        .shuffle(count, seed=0)
    ).map(augment, num_parallel_calls=autotune)
    plain = tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(
        count, seed=0)
    return {
        name: dataset.batch(batch_size).prefetch(autotune)
        for name, dataset in (
            ("tf.data", plain), ("map", serial), ("parallel-map", parallel),
            ("cache-parallel-map", cached),
        )
    }


def _build_scaling(name, image_size, width):
    """The compiled model of one configuration and its device note."""
    import keras
    import tensorflow as tf

    if name == "xla":
        model = _compile_scaling(_scaling_model(image_size, width), True)
        if model.jit_compile is not True:
            raise RuntimeError(
                "Keras turned `jit_compile=True` off (op determinism on, or "
                "a layer without XLA support): the `xla` row would not use "
                f"XLA. Received: model.jit_compile={model.jit_compile!r}"
            )
        return model, "default"
    if name == "mixed_float16":
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            model = _compile_scaling(_scaling_model(image_size, width))
        finally:
            keras.mixed_precision.set_global_policy(previous)
        return model, "default"
    if name == "mirrored":
        devices = _mirrored_devices()
        # Reduce through one device rather than with collective ops: a
        # second MirroredStrategy in the process (the caller's) would
        # reuse the same collective instance keys and clash with this one.
        strategy = tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        with strategy.scope():
            model = _compile_scaling(_scaling_model(image_size, width))
        return model, " + ".join(d.split("device:")[-1] for d in devices)
    return _compile_scaling(_scaling_model(image_size, width)), "default"


def _step_clock():
    """A Keras callback timing seconds per step between step ends.

    Timing from the end of the first step to the end of the last leaves
    out `fit`'s fixed per-call cost, which would dominate short epochs.
    """
    import keras

    class StepClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

        def seconds_per_step(self):
            return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)

    return StepClock()


def bench_scaling(configurations=None, repeats=5, steps=30, batch_size=64,
                  image_size=16, width=16, out=None):
    """Times a two-task CNN's training step under each scaling tool.

    Every configuration trains its own copy of the same model (same
    initial weights) on the same examples for one epoch of `steps` steps
    of global batch `batch_size`. After one untimed warm-up epoch each
    (tracing, XLA compilation, filling caches), the configurations are
    timed in a shuffled order per repeat; each repeat's time is divided by
    the baseline's (`"arrays"`) time in the same repeat, and the median,
    minimum and maximum of these ratios are reported. Op determinism is
    switched off during the run (Keras refuses `jit_compile=True` while it
    is on) and restored afterwards, as is the global dtype policy.

    Args:
        configurations: optional list of names from
            `SCALING_CONFIGURATIONS` (default: all). `"arrays"` is always
            timed as the baseline.
        repeats: int >= 1. Timed epochs per configuration.
        steps: int >= 2. Training steps per epoch; the time per step is
            measured from the end of the first step to the end of the
            last, leaving out `fit`'s fixed cost per call.
        batch_size: int >= 2. Global batch size.
        image_size: int >= 4. Side of the digit images.
        width: int >= 1. Filters of the first convolution.
        out: stream for the table (default `sys.stdout`).

    Returns:
        dict with `"device"` (str), `"baseline_ms"` (median ms per step of
        the baseline) and `"rows"`: `{name: {"ratio", "low", "high",
        "what", "devices"}}`, the ratios being time / baseline time.

    Example:

    ```python
    results = bench_scaling(["tf.data", "xla"], repeats=3)
    results["rows"]["xla"]["ratio"]
    ```
    """
    from tensorflow.python.framework import config as tf_config

    out = sys.stdout if out is None else out
    names = (list(SCALING_CONFIGURATIONS) if configurations is None
             else list(dict.fromkeys(["arrays", *configurations])))
    unknown = [n for n in names if n not in SCALING_CONFIGURATIONS]
    if unknown:
        raise ValueError(
            f"`configurations` must be among {list(SCALING_CONFIGURATIONS)}."
            f" Received unknown names: {unknown}"
        )
    for argument, value, low in (
        ("repeats", repeats, 1), ("steps", steps, 2),
        ("batch_size", batch_size, 2), ("image_size", image_size, 4),
        ("width", width, 1),
    ):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(
                f"`{argument}` must be an int >= {low}. "
                f"Received: {argument}={value!r}"
            )
    if "mirrored" in names:
        _mirrored_devices()  # fail early, before any timing
    deterministic = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    try:
        x, y = _scaling_data(steps, batch_size, image_size)
        pipelines = _pipelines(x, y, batch_size, image_size)
        models, devices = {}, {}
        for name in names:
            models[name], devices[name] = _build_scaling(
                name, image_size, width)

        clock = _step_clock()

        def epoch(name):
            if name in pipelines:
                models[name].fit(pipelines[name], epochs=1, verbose=0,
                                 shuffle=False, callbacks=[clock])
            else:
                models[name].fit(x, y, batch_size=batch_size, epochs=1,
                                 verbose=0, callbacks=[clock])
            return clock.seconds_per_step()

        for name in names:  # warm-up: tracing, compilation, caches
            epoch(name)
        rng = np.random.default_rng(0)
        times = {name: [] for name in names}
        for _ in range(repeats):
            for name in rng.permutation(names):
                times[name].append(epoch(name))
    finally:
        if deterministic:
            tf_config.enable_op_determinism()
    base = np.array(times["arrays"])
    rows = {}
    for name in names:
        ratios = np.array(times[name]) / base
        rows[name] = {
            "ratio": float(np.median(ratios)), "low": float(ratios.min()),
            "high": float(ratios.max()),
            "what": SCALING_CONFIGURATIONS[name], "devices": devices[name],
        }
    results = {"device": _device_description(),
               "baseline_ms": float(np.median(base) * 1e3), "rows": rows}
    _print_scaling(results, repeats, out)
    return results


def _print_scaling(results, repeats, out):
    header = ["configuration", "ratio", f"min-max ({repeats})", "devices",
              "what"]
    rows = [[name, f"{r['ratio']:.2f}", f"{r['low']:.2f}-{r['high']:.2f}",
             r["devices"], r["what"]]
            for name, r in results["rows"].items()]
    print("time per training step / fit on NumPy arrays "
          "(median of repeats; < 1 is faster)", file=out)
    print(f"device: {results['device']}; baseline "
          f"{results['baseline_ms']:.2f} ms/step", file=out)
    _print_columns([header, *rows], out)
    if not results["device"].startswith("CPU only"):
        return
    print("note: no GPU. mixed_float16 has no float16 hardware to use here "
          "and is expected to be no faster; the mirrored replicas share "
          "the same cores. GPU expectations (not measured): "
          "book/practice/scaling_up.ipynb", file=out)


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
    scaling = commands.add_parser(
        "scaling", help="tf.data, XLA, mixed precision, MirroredStrategy"
    )
    scaling.add_argument("--configurations", nargs="+", default=None,
                         choices=list(SCALING_CONFIGURATIONS))
    scaling.add_argument("--repeats", type=int, default=5)
    scaling.add_argument("--steps", type=int, default=30)
    scaling.add_argument("--batch-size", type=int, default=64)
    scaling.add_argument("--image-size", type=int, default=16)
    scaling.add_argument("--width", type=int, default=16)
    scaling.add_argument(
        "--quick", action="store_true",
        help="tiny run (1 repeat, 3 steps, batch 8, 8x8 images, width 4)",
    )
    args = parser.parse_args(argv)
    if args.command == "scaling":
        # logical CPU devices can only be made before TensorFlow starts
        if args.configurations is None or "mirrored" in args.configurations:
            split_cpu(2)
        if args.quick:
            args.repeats, args.steps, args.batch_size = 1, 3, 8
            args.image_size, args.width = 8, 4
        return bench_scaling(
            configurations=args.configurations, repeats=args.repeats,
            steps=args.steps, batch_size=args.batch_size,
            image_size=args.image_size, width=args.width,
        )
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
