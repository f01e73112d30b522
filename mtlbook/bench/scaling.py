"""The cost per training step of the "Scaling up" chapter's tools.

A small two-task CNN trains under each configuration of
`SCALING_CONFIGURATIONS`: `tf.data` pipelines (cache / shuffle / prefetch,
a per-example PNG decode + augmentation map, serial, parallel, and
decode-cache-then-augment), `jit_compile=True` (XLA), the `mixed_float16`
policy, and `tf.distribute.MirroredStrategy` over two devices (two GPUs,
or the CPU split into two logical devices). The baseline is `fit` on NumPy
arrays (float32, no XLA, one device).

Each configuration runs in its own Python process, started fresh by
`bench_scaling`: the process splits its CPU or sets its dtype policy
without touching the caller's TensorFlow, starts with op determinism off
(Keras refuses XLA under it), and holds the only `MirroredStrategy` in it.
All the processes stay alive during the run: after one warm-up epoch each
(tracing, XLA compilation, filling caches), every repeat asks each process
for one timed epoch, in a shuffled order, one process at a time (the others
wait, idle), so each repeat's ratios compare epochs run seconds apart,
which cancels most of a shared machine's slow bursts.

A process is `python -m mtlbook.bench scaling --one NAME ...`: it prints
one JSON line when it is ready, then one per `epoch` line it reads (the
caller waits for replies with `select`, so this runs on Linux and macOS,
not on Windows).

Run the benchmark as `python -m mtlbook.bench scaling`.
"""

import json
import os
import select
import subprocess
import sys
import tempfile
import time

import numpy as np

from mtlbook.bench.timing import (
    check_int, format_ratio, interleave, print_columns, step_clock,
    summarize,
)

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

# seconds to wait for one reply of a configuration's process (the first
# includes starting TensorFlow and the warm-up epoch on a busy machine)
REPLY_TIMEOUT_S = 900

_PIPELINES = ("tf.data", "map", "parallel-map", "cache-parallel-map")


def split_cpu(num_devices=2):
    """Splits the first physical CPU into `num_devices` logical devices.

    Works only before TensorFlow initialises its devices (before the first
    op); afterwards the existing configuration is kept. `bench_scaling`
    calls it in the `mirrored` configuration's own process.

    Args:
        num_devices: int >= 1.

    Returns:
        list of the logical CPU device names now available.

    Example:

    ```python
    split_cpu(2)  # ['/device:CPU:0', '/device:CPU:1']
    ```
    """
    import tensorflow as tf

    if (isinstance(num_devices, bool) or not isinstance(num_devices, int)
            or num_devices < 1):
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

    # physical devices first: listing logical ones initialises TensorFlow,
    # after which the CPU can no longer be split
    if len(tf.config.list_physical_devices("GPU")) >= 2:
        return [d.name for d in tf.config.list_logical_devices("GPU")][:2]
    cpus = split_cpu(2)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if len(cpus) < 2:
        raise RuntimeError(
            "The `mirrored` configuration needs two devices: two GPUs, or "
            "the CPU split into two logical devices before TensorFlow "
            f"initialises. Received: GPUs={gpus}, CPUs={cpus}"
        )
    return cpus[:2]


def _device_description():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} GPU ({details.get('device_name', 'unknown')})"
    return (f"CPU only: {os.cpu_count()} cores, "
            f"TensorFlow {tf.__version__}")


def _scaling_data(steps, batch_size, image_size):
    from mtlbook.data import load_digits

    x, y = load_digits(image_size=image_size, test_fraction=0.1)["train"]
    index = np.arange(steps * batch_size) % len(x)
    return x[index], {task: labels[index] for task, labels in y.items()}


def _scaling_model(image_size, width, seed=0):
    """The two-task CNN; explicit initializer seeds, no global state."""
    import keras

    def seeded(index):
        return keras.initializers.GlorotUniform(seed=seed + index)

    inputs = keras.Input((image_size, image_size, 1))
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                            kernel_initializer=seeded(0))(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu",
                            kernel_initializer=seeded(1))(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(4 * width, activation="relu",
                           kernel_initializer=seeded(2))(h)
    # the heads stay float32 under mixed precision
    outputs = {
        task: keras.layers.Dense(units, name=task, dtype="float32",
                                 kernel_initializer=seeded(3 + i))(h)
        for i, (task, units) in enumerate((("digit", 10), ("parity", 2)))
    }
    return keras.Model(inputs, outputs)


def _compile_scaling(model, jit_compile=False):
    import keras

    loss = {t: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            for t in ("digit", "parity")}
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss,
                  jit_compile=jit_compile)
    return model


def _pipeline(name, x, y, batch_size, image_size):
    """The `tf.data.Dataset` of one input-pipeline configuration."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    count = len(x)
    if name == "tf.data":
        plain = tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(
            count, seed=0)
        return plain.batch(batch_size).prefetch(autotune)
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

    files = tf.data.Dataset.from_tensor_slices((encoded, y))
    if name == "map":
        dataset = with_seeds(files.shuffle(count, seed=0).map(decode)).map(
            augment)
    elif name == "parallel-map":
        dataset = with_seeds(
            files.shuffle(count, seed=0).map(decode,
                                             num_parallel_calls=autotune)
        ).map(augment, num_parallel_calls=autotune)
    else:  # cache-parallel-map
        dataset = with_seeds(
            files.map(decode, num_parallel_calls=autotune).cache()
            .shuffle(count, seed=0)
        ).map(augment, num_parallel_calls=autotune)
    return dataset.batch(batch_size).prefetch(autotune)


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
        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            model = _compile_scaling(_scaling_model(image_size, width))
        return model, " + ".join(d.split("device:")[-1] for d in devices)
    return _compile_scaling(_scaling_model(image_size, width)), "default"


def serve(name, steps, batch_size, image_size, width, requests, replies):
    """Runs one configuration and times its epochs on request.

    This is the body of a configuration's own process: it builds the
    configuration (for `mirrored`, first splitting the CPU when there are
    not two GPUs), trains one warm-up epoch, writes the JSON line
    `{"ready": true, "devices": ..., "device": ...}` to `replies`, then for
    each line `epoch` read from `requests` trains one epoch and writes
    `{"seconds_per_step": ...}`. It returns at the end of `requests`.

    Args:
        name: str. A key of `SCALING_CONFIGURATIONS`.
        steps, batch_size, image_size, width: as in `bench_scaling`.
        requests: text stream of requests (the process's stdin).
        replies: text stream for the JSON replies.

    Example:

    ```python
    serve("xla", 30, 64, 16, 16, sys.stdin, sys.stdout)
    ```
    """
    if name not in SCALING_CONFIGURATIONS:
        raise ValueError(
            f"`name` must be among {list(SCALING_CONFIGURATIONS)}. "
            f"Received: name={name!r}"
        )
    if name == "mirrored":
        _mirrored_devices()  # split the CPU before TensorFlow starts
    x, y = _scaling_data(steps, batch_size, image_size)
    model, devices = _build_scaling(name, image_size, width)
    clock = step_clock()
    if name in _PIPELINES:
        dataset = _pipeline(name, x, y, batch_size, image_size)

        def epoch():
            model.fit(dataset, epochs=1, verbose=0, shuffle=False,
                      callbacks=[clock])
            return clock.seconds_per_step()
    else:
        def epoch():
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0,
                      callbacks=[clock])
            return clock.seconds_per_step()

    def reply(message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    epoch()  # warm-up: tracing, compilation, caches
    reply({"ready": True, "devices": devices,
           "device": _device_description()})
    for line in requests:
        if line.strip() != "epoch":
            raise ValueError(
                f"Requests must be lines `epoch`. Received: {line!r}")
        reply({"seconds_per_step": epoch()})


def serve_stdio(name, steps, batch_size, image_size, width):
    """`serve` on the process's stdin and stdout.

    Anything else that writes to stdout (a library's print) is sent to
    stderr instead, so that stdout carries the JSON replies only.

    Args:
        name, steps, batch_size, image_size, width: as in `serve`.

    Example:

    ```python
    serve_stdio("arrays", 30, 64, 16, 16)
    ```
    """
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout.flush()  # anything pending goes to stderr too
    sys.stdout = sys.stderr
    serve(name, steps, batch_size, image_size, width, sys.stdin, replies)


def _worker_environment():
    import mtlbook

    env = dict(os.environ)
    # a fresh TensorFlow: op determinism off, unless the caller's
    # environment turns it on for every process
    env.pop("TF_DETERMINISTIC_OPS", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # several processes share a GPU: none may take all of its memory
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    # the caller's mtlbook, when it comes from a source tree (an installed
    # one is found anyway; its site-packages must not go before the
    # standard library)
    root = os.path.dirname(os.path.dirname(os.path.abspath(mtlbook.__file__)))
    if os.path.basename(root) not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = os.pathsep.join(
            [root, *filter(None, [env.get("PYTHONPATH")])])
    return env


class _Worker:
    """One configuration's process, with a line-based JSON protocol."""

    def __init__(self, name, steps, batch_size, image_size, width):
        self.name = name
        self.stderr = tempfile.TemporaryFile()
        command = [
            sys.executable, "-m", "mtlbook.bench", "scaling", "--one", name,
            "--steps", str(steps), "--batch-size", str(batch_size),
            "--image-size", str(image_size), "--width", str(width),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, env=_worker_environment(),
        )
        self.buffer = b""

    def reply(self):
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0]
            if not ready:
                raise RuntimeError(
                    f"The `{self.name}` process sent no reply within "
                    f"{REPLY_TIMEOUT_S} s.{self._stderr_tail()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.process.wait()
                raise RuntimeError(
                    f"The `{self.name}` process exited with code "
                    f"{self.process.returncode}.{self._stderr_tail()}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def epoch(self):
        self.process.stdin.write(b"epoch\n")
        self.process.stdin.flush()
        return self.reply()["seconds_per_step"]

    def _stderr_tail(self):
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace")[-3000:]
        return f" Its stderr ends with:\n{tail}" if tail else ""

    def close(self):
        try:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.stderr.close()


def bench_scaling(configurations=None, repeats=5, steps=30, batch_size=64,
                  image_size=16, width=16, out=None):
    """Times a two-task CNN's training step under each scaling tool.

    Every configuration trains its own copy of the same model (same
    initial weights) on the same examples, in its own fresh process (see
    the module's docstring), for one untimed warm-up epoch and then
    `repeats` timed epochs of `steps` steps of global batch `batch_size`,
    the configurations taking turns in a shuffled order per repeat. Each
    repeat's time per step is divided by the baseline's (`"arrays"`) in
    the same repeat, and the median and spread of these ratios are
    reported. The calling process's TensorFlow (devices, op determinism,
    dtype policy) is left untouched.

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
        the baseline) and `"rows"`: `{name: {"ratio", "spread", "low",
        "high", "what", "devices"}}`, the ratios being time / baseline
        time (median, half the interquartile range / median, minimum,
        maximum over the repeats).

    Example:

    ```python
    results = bench_scaling(["tf.data", "xla"], repeats=3)
    results["rows"]["xla"]["ratio"]
    ```
    """
    out = sys.stdout if out is None else out
    if configurations is not None and (
            isinstance(configurations, str)
            or not all(isinstance(n, str) for n in configurations)):
        raise ValueError(
            "`configurations` must be a list of names. "
            f"Received: configurations={configurations!r}"
        )
    names = (list(SCALING_CONFIGURATIONS) if configurations is None
             else list(dict.fromkeys(["arrays", *configurations])))
    unknown = [n for n in names if n not in SCALING_CONFIGURATIONS]
    if unknown:
        raise ValueError(
            f"`configurations` must be among {list(SCALING_CONFIGURATIONS)}."
            f" Received unknown names: {unknown}"
        )
    repeats = check_int("repeats", repeats, 1)
    steps = check_int("steps", steps, 2)
    batch_size = check_int("batch_size", batch_size, 2)
    image_size = check_int("image_size", image_size, 4)
    width = check_int("width", width, 1)
    workers = {}
    try:
        for name in names:  # all start at once; their warm-ups overlap
            workers[name] = _Worker(name, steps, batch_size, image_size,
                                    width)
        ready = {name: worker.reply() for name, worker in workers.items()}
        times = interleave(
            {name: worker.epoch for name, worker in workers.items()},
            repeats)
    finally:
        for worker in workers.values():
            worker.close()
    rows = {}
    for name in names:
        rows[name] = {
            **summarize(times[name], times["arrays"]),
            "what": SCALING_CONFIGURATIONS[name],
            "devices": ready[name]["devices"],
        }
    results = {"device": ready["arrays"]["device"],
               "baseline_ms": float(np.median(times["arrays"]) * 1e3),
               "rows": rows}
    _print_scaling(results, repeats, out)
    return results


def _print_scaling(results, repeats, out):
    header = ["configuration", "ratio ± spread", f"min-max ({repeats})",
              "devices", "what"]
    rows = [[name, format_ratio(r),
             f"{r['low']:.2f}-{r['high']:.2f}", r["devices"], r["what"]]
            for name, r in results["rows"].items()]
    print("time per training step / fit on NumPy arrays (median of "
          "repeats ± half the interquartile range; < 1 is faster)", file=out)
    print(f"device: {results['device']}; baseline "
          f"{results['baseline_ms']:.2f} ms/step", file=out)
    print_columns([header, *rows], out)
    if not results["device"].startswith("CPU only"):
        return
    print("note: no GPU. mixed_float16 has no float16 hardware to use here "
          "and is expected to be no faster; the mirrored replicas share "
          "the same cores. GPU expectations (not measured): "
          "book/practice/scaling_up.ipynb", file=out)
