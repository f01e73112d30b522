"""Multi-worker training on one machine, with real worker processes.

`tf.distribute.MultiWorkerMirroredStrategy` runs the same script once per
worker; each process learns the cluster and its own place in it from the
`TF_CONFIG` environment variable. This module starts such a cluster on the
loopback interface (127.0.0.1, ports chosen free at run time), one Python
process per worker, waits for all of them within a time limit and always
stops every process it started. It also holds the small two-task training
run that `tests/test_multiworker.py` and the chapter *Scaling up* run under
the strategy and, for comparison, in a single process.

Run as a worker (what `run_workers` starts, once per worker):

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:p0", "127.0.0.1:p1"]},
                "task": {"type": "worker", "index": 0}}' \\
        python -m mtlbook.distribute --out DIR --epochs 3 --interrupt-after 1

Example:

```python
run_workers(
    ["-m", "mtlbook.distribute", "--out", out, "--interrupt-after", "1"],
    num_workers=2, timeout=120,
)
(weights0, report0), (weights1, report1) = read_worker_results(out)
single, _ = train_two_task_pcgrad(epochs=3)  # one process, no strategy
max_abs_difference(weights0, [w.numpy() for w in single.weights])
```
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from mtlbook.data import load_digits
from mtlbook.training import MultiTaskModel
from mtlbook.weighting import PCGrad

LOOPBACK = "127.0.0.1"


def free_loopback_ports(count):
    """Returns `count` distinct TCP ports free on 127.0.0.1 right now.

    Each port is found by binding a socket to `("127.0.0.1", 0)`; all
    sockets stay open until every port is chosen, so the ports differ.
    Another program may still take a port before a worker binds it.

    Args:
        count: int >= 1. Number of ports.

    Returns:
        list of `count` ints.

    Example:

    ```python
    workers = [f"127.0.0.1:{port}" for port in free_loopback_ports(2)]
    ```
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(
            f"`count` must be an int >= 1. Received: count={count!r}"
        )
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(workers, index):
    """The `TF_CONFIG` value of worker `index` in a cluster of `workers`.

    Args:
        workers: non-empty list of `"host:port"` strings, one per worker,
            in the same order on every worker.
        index: int in `[0, len(workers))`. This worker's place; worker 0
            is the chief.

    Returns:
        str, the JSON document `{"cluster": {"worker": workers},
        "task": {"type": "worker", "index": index}}`.

    Example:

    ```python
    os.environ["TF_CONFIG"] = tf_config(["host0:12345", "host1:12345"], 0)
    ```
    """
    if (not isinstance(workers, (list, tuple)) or not workers
            or not all(isinstance(w, str) and ":" in w for w in workers)):
        raise ValueError(
            "`workers` must be a non-empty list of 'host:port' strings. "
            f"Received: workers={workers!r}"
        )
    if (not isinstance(index, int) or isinstance(index, bool)
            or not 0 <= index < len(workers)):
        raise ValueError(
            f"`index` must be an int in [0, {len(workers)}). "
            f"Received: index={index!r}"
        )
    return json.dumps({
        "cluster": {"worker": list(workers)},
        "task": {"type": "worker", "index": index},
    })


def run_workers(args, num_workers=2, timeout=120.0, env=None):
    """Runs `python <args>` as `num_workers` workers of a loopback cluster.

    Every worker is the same interpreter (`sys.executable`) with the same
    arguments and its own `TF_CONFIG` (addresses `127.0.0.1:<free port>`,
    its `index`) and `TF_CPP_MIN_LOG_LEVEL=3`. All workers must finish,
    with exit status 0, within `timeout` seconds in total; the first
    worker that fails fails the cluster. In every case (success, failure,
    timeout, an exception here) every process still running is killed and
    reaped before this function returns.

    Args:
        args: list of str, the interpreter arguments, e.g.
            `["-m", "mtlbook.distribute", "--out", "/tmp/run"]`.
        num_workers: int >= 1.
        timeout: positive number, seconds for the whole cluster.
        env: optional dict of extra environment variables for every worker.

    Returns:
        list of `num_workers` dicts, in worker order, with keys `address`
        (`"127.0.0.1:<port>"`), `pid`, `returncode` and `output` (stdout
        and stderr together).

    Raises:
        RuntimeError: a worker exited with a non-zero status, or the
            cluster ran past `timeout`. The message holds every worker's
            last output lines; its attribute `workers` holds the dicts.

    Example:

    ```python
    workers = run_workers(["-m", "mtlbook.distribute", "--out", out])
    print(workers[0]["output"])
    ```
    """
    if (not isinstance(args, (list, tuple)) or not args
            or not all(isinstance(a, str) for a in args)):
        raise TypeError(
            f"`args` must be a non-empty list of str. Received: args={args!r}"
        )
    if (not isinstance(num_workers, int) or isinstance(num_workers, bool)
            or num_workers < 1):
        raise ValueError(
            "`num_workers` must be an int >= 1. "
            f"Received: num_workers={num_workers!r}"
        )
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not timeout > 0):
        raise ValueError(
            "`timeout` must be a positive number. "
            f"Received: timeout={timeout!r}"
        )
    addresses = [f"{LOOPBACK}:{port}"
                 for port in free_loopback_ports(num_workers)]
    processes, logs = [], []
    deadline = time.monotonic() + timeout
    failure = None
    try:
        for index in range(num_workers):
            worker_env = dict(os.environ, **(env or {}))
            worker_env["TF_CONFIG"] = tf_config(addresses, index)
            worker_env["TF_CPP_MIN_LOG_LEVEL"] = "3"
            log = tempfile.TemporaryFile(mode="w+")
            logs.append(log)
            processes.append(subprocess.Popen(
                [sys.executable, *args], env=worker_env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            ))
        while failure is None:
            codes = [process.poll() for process in processes]
            failed = [i for i, code in enumerate(codes)
                      if code not in (None, 0)]
            if failed:
                failure = (f"worker {failed[0]} exited with status "
                           f"{codes[failed[0]]}")
            elif all(code == 0 for code in codes):
                break
            elif time.monotonic() > deadline:
                failure = f"the cluster ran past timeout={timeout} s"
            else:
                time.sleep(0.1)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        workers = []
        for address, process, log in zip(addresses, processes, logs):
            log.seek(0)
            workers.append({"address": address, "pid": process.pid,
                            "returncode": process.returncode,
                            "output": log.read()})
            log.close()
    if failure is not None:
        tails = "\n".join(
            f"--- worker {i} ({w['address']}):\n{w['output'][-3000:]}"
            for i, w in enumerate(workers)
        )
        error = RuntimeError(f"{failure}.\n{tails}")
        error.workers = workers
        raise error
    return workers


# ------------------------------------------------- the training run compared
class MultiWorkerFit:
    """Mixin for `keras.Model` subclasses: `fit` under several workers.

    Keras 3 `fit` (checked: 3.9, 3.13, 3.15; TensorFlow backend) fails
    twice under `tf.distribute.MultiWorkerMirroredStrategy` with more than
    one worker (keras-team/keras#20585):

    1. Before training it all-reduces the first distributed batch,
       `strategy.reduce("MEAN", batch)`, only to learn the batch's shapes;
       for a batch of several tensors such as `(x, {task: y})` that raises
       `ValueError: Attempt to convert a value (PerReplica...) to a
       Tensor`. This mixin takes the shapes from this worker's own part of
       the batch instead, with no collective.
    2. After each step it averages every logged value over the workers
       with `strategy.reduce("MEAN", value, axis=0)`, which raises
       `Invalid reduction dimension 0 for input with 0 dimensions` for the
       scalar losses and metrics. This mixin's `train_step` returns each
       value with shape `(1,)`: the mean over axis 0 of the workers'
       values is then the scalar Keras expects.

    Only `fit` is covered: `evaluate` reduces its logs the same way and is
    not changed here. Remove the mixin once Keras fixes both.

    Example:

    ```python
    class WorkerModel(MultiWorkerFit, MultiTaskModel):
        pass
    ```
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and self._distribute_strategy is not None:
            local = self.distribute_strategy.experimental_local_results
            for item in iterator:  # (step, [end step,] iterator)
                data_batch = tf.nest.map_structure(
                    lambda value: local(value)[0], next(item[-1])
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch
        )

    def train_step(self, data):
        logs = super().train_step(data)
        if not _several_workers(tf.distribute.get_strategy()):
            return logs
        return {name: tf.reshape(value, (1,)) for name, value in logs.items()}


def _several_workers(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy of 2+ workers."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    workers = strategy.cluster_resolver.cluster_spec().as_dict()
    return len(workers.get("worker", [])) + len(workers.get("chief", [])) > 1


class _WorkerModel(MultiWorkerFit, MultiTaskModel):
    """`MultiTaskModel` whose `fit` also works under several workers."""


class _ShapesFixOnly(MultiWorkerFit, MultiTaskModel):
    """`MultiTaskModel` with the first fix of `MultiWorkerFit` only."""

    def train_step(self, data):
        return MultiTaskModel.train_step(self, data)


def keras_errors_without_fix(**run):
    """What `fit` raises under the current strategy without `MultiWorkerFit`.

    Trains one epoch with a plain `MultiTaskModel`, then with only the
    first fix of `MultiWorkerFit`, and catches what each raises.

    Args:
        **run: arguments of `train_two_task_pcgrad` (`examples`, ...).

    Returns:
        dict `{"plain MultiTaskModel": error, "shapes fix only": error}`,
        each `error` the first line of `"<type>: <message>"` (at most 100
        characters) or `None` if `fit` ran.
    """
    errors = {}
    for name, model_class in (("plain MultiTaskModel", MultiTaskModel),
                              ("shapes fix only", _ShapesFixOnly)):
        try:
            train_two_task_pcgrad(epochs=1, model_class=model_class, **run)
            errors[name] = None
        except Exception as error:  # whatever Keras raises, reported
            text = f"{type(error).__name__}: {error}".splitlines()[0]
            errors[name] = text.split(" for '{{node")[0][:100]
    return errors


def train_two_task_pcgrad(epochs=3, examples=256, batch_size=64,
                          backup_dir=None, interrupt_after=None, seed=0,
                          model_class=None):
    """Trains a small two-task `MultiTaskModel` with PCGrad on the digits.

    Runs under the current `tf.distribute` strategy (none: one process).
    The data order is fixed (no shuffle) and every global batch is split
    over the replicas by example (`AutoShardPolicy.DATA`), so that the
    run is the same computation on any number of workers.

    Args:
        epochs: int. Epochs in total (a resumed run counts the restored
            ones).
        examples: int. The first `examples` training digits.
        batch_size: int. The global batch.
        backup_dir: optional str. Adds `keras.callbacks.BackupAndRestore`
            with this directory.
        interrupt_after: optional int. Raises `Interrupted` at the end of
            this epoch (1-based), after the backup is written.
        seed: int. Seed of the initial weights and of PCGrad.
        model_class: optional `MultiTaskModel` subclass; default a
            `MultiTaskModel` with the `MultiWorkerFit` mixin.

    Returns:
        `(model, history)` as returned by `fit`.
    """
    x, y = load_digits(tasks=("digit", "parity"))["train"]
    x, y = x[:examples], {t: v[:examples] for t, v in y.items()}
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    dataset = (tf.data.Dataset.from_tensor_slices((x, y))
               .batch(batch_size).with_options(options))
    with tf.distribute.get_strategy().scope():
        keras.utils.set_random_seed(seed)
        inputs = keras.Input(x.shape[1:])
        h = keras.layers.Flatten()(inputs)
        h = keras.layers.Dense(32, activation="relu", name="trunk")(h)
        outputs = {"digit": keras.layers.Dense(10, name="digit")(h),
                   "parity": keras.layers.Dense(2, name="parity")(h)}
        model_class = model_class or _WorkerModel
        model = model_class(inputs, outputs, strategy=PCGrad(seed=seed),
                            name="two_tasks")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss={"digit": loss, "parity": loss})
    callbacks = []
    if backup_dir is not None:
        callbacks.append(keras.callbacks.BackupAndRestore(backup_dir))
    if interrupt_after is not None:
        callbacks.append(_Interrupt(interrupt_after))
    # shuffle=False: the dataset's order is the order (and no warning)
    history = model.fit(dataset, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=callbacks)
    return model, history


class Interrupted(RuntimeError):
    """Raised by the simulated failure of `train_two_task_pcgrad`."""


class _Interrupt(keras.callbacks.Callback):
    """Raises `Interrupted` at the end of epoch `epoch` (1-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Interrupted(f"simulated failure after epoch {epoch + 1}")


def main(argv=None):
    """Worker entry point: trains under MultiWorkerMirroredStrategy.

    Writes `worker-<index>.npz` (the final weights, in `model.weights`
    order) and `worker-<index>.json` (its `TF_CONFIG`, replicas, whether
    it is the chief, with `--check-keras` the errors of `fit` without
    `MultiWorkerFit`, the backup files seen after the interruption, epochs
    run after the restart, whether the backup is left) to `--out`.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--interrupt-after", type=int, default=None)
    parser.add_argument("--check-keras", action="store_true",
                        help="first try fit without MultiWorkerFit")
    options = parser.parse_args(argv)
    # First, before any other TensorFlow operation: reads TF_CONFIG.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = strategy.cluster_resolver.task_id
    # Keras 3's BackupAndRestore writes from every worker: one folder each.
    backup = os.path.join(options.out, "backup", f"worker-{index}")
    run = dict(epochs=options.epochs, examples=options.examples,
               batch_size=options.batch_size, backup_dir=backup)
    report = {"tf_config": json.loads(os.environ["TF_CONFIG"]),
              "replicas": strategy.num_replicas_in_sync,
              "chief": strategy.cluster_resolver.task_id == 0,
              "backup_files": []}
    with strategy.scope():
        if options.check_keras:
            report["keras_errors"] = keras_errors_without_fix(
                examples=options.examples, batch_size=options.batch_size)
        if options.interrupt_after is not None:
            try:
                train_two_task_pcgrad(
                    interrupt_after=options.interrupt_after, **run)
            except Interrupted:
                report["backup_files"] = sorted(os.listdir(backup))
        model, history = train_two_task_pcgrad(**run)
    report["epochs_run"] = len(history.history["loss"])
    report["backup_left"] = os.path.exists(backup)
    weights = [np.asarray(w.numpy()) for w in model.weights]
    np.savez(os.path.join(options.out, f"worker-{index}.npz"), *weights)
    with open(os.path.join(options.out, f"worker-{index}.json"), "w") as f:
        json.dump(report, f)
    print(f"worker {index} done: {report}", flush=True)


def read_worker_results(out_dir, num_workers=2):
    """What the workers of `main` wrote to `out_dir`.

    Args:
        out_dir: str, the `--out` folder of the workers.
        num_workers: int >= 1.

    Returns:
        list of `(weights, report)`, one per worker in worker order:
        `weights` a list of arrays in `model.weights` order, `report` the
        dict of `worker-<index>.json`.

    Example:

    ```python
    (weights0, report0), (weights1, report1) = read_worker_results(out)
    ```
    """
    if (not isinstance(num_workers, int) or isinstance(num_workers, bool)
            or num_workers < 1):
        raise ValueError(
            "`num_workers` must be an int >= 1. "
            f"Received: num_workers={num_workers!r}"
        )
    results = []
    for index in range(num_workers):
        path = os.path.join(out_dir, f"worker-{index}")
        with np.load(path + ".npz") as arrays:
            weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        with open(path + ".json") as f:
            results.append((weights, json.load(f)))
    return results


def max_abs_difference(weights_a, weights_b):
    """Largest `|a - b|` over two equally long lists of weight arrays.

    Args:
        weights_a: list of arrays (or Keras variables).
        weights_b: list of arrays (or Keras variables) of the same shapes.

    Returns:
        float.

    Example:

    ```python
    max_abs_difference(model.get_weights(), other.get_weights())
    ```
    """
    a = [np.asarray(w) for w in weights_a]
    b = [np.asarray(w) for w in weights_b]
    if [w.shape for w in a] != [w.shape for w in b]:
        raise ValueError(
            "`weights_a` and `weights_b` must have the same shapes. "
            f"Received: {[w.shape for w in a]} and {[w.shape for w in b]}"
        )
    return max(float(np.max(np.abs(x - y), initial=0.0))
               for x, y in zip(a, b))


if __name__ == "__main__":
    main()
