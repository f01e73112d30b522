"""Probe suite (issue 15): bad inputs and degenerate numerics, public API.

Every public function and class of `mtlbook.layers`, `weighting`,
`training`, `transfer`, `adaptation`, `data`, `models`, `metrics`, `plot`
and `results` is called with ordinary mistakes (wrong types, bools for
numbers, NaN/inf, out-of-range values, empty arrays, mismatched task names
and shapes) and with degenerate numbers (all-zero gradients, a zero row,
gradients scaled by 1e-30 or 1e30, float16, one task, zero or infinite
losses). Each probe expects either

- `error(argument)`: a `ValueError` or `TypeError` whose message names the
  argument in backticks (`` `alpha` ``, as the package writes them) and
  shows the value received (its `repr` or `str`), or
- `correct(check)`: a result for which `check` (finite, on the simplex,
  equal to an independently computed value, scale-equivariant, ...) holds.

Each outcome is one of: *clear* (the expected clear error), *correct*,
*obscure* (another exception, an error that does not name the argument or
the value, or an error where a result was expected) or *silent* (a result
where an error was expected, or a wrong result). The test asserts that
every probe is clear or correct; `summary()` (`python
tests/test_probes.py`) prints the counts and the failing probes, grouped by
the package file that decides the behaviour.

Online loaders are probed only with arguments that fail before any
download: `keras.utils.get_file` is replaced by a function that raises
while the probes run. Probes that need the TensorFlow backend are marked
`tensorflow`; the others are backend-neutral.
"""

import contextlib
import functools
import math
import os
import re
import sys
import tempfile
import warnings
from typing import Callable, NamedTuple

import keras
import numpy as np
import pytest

NAN, INF = float("nan"), float("inf")
# files the probes write (a fake mnist.npz, a model cache, stored results);
# removed when the interpreter exits
SCRATCH = tempfile.TemporaryDirectory(prefix="mtlbook-probes-")
TENSORFLOW = keras.backend.backend() == "tensorflow"


# ------------------------------------------------------------ the records
class Expect(NamedTuple):
    """What a probe expects: a clear error or a correct result."""

    kind: str
    arguments: tuple = ()
    received: tuple = ()
    check: Callable = None
    also_clear: tuple = ()


class Probe(NamedTuple):
    """One call of a public callable and what it must do."""

    id: str
    call: Callable
    expect: Expect
    file: str
    tensorflow: bool = False


PRIMITIVES = (str, bytes, int, float, bool, type(None), np.number)


def representations(value):
    """The strings any of which shows `value` in a message.

    A number, string, bool or None must appear as its `repr` or `str`. A
    container may also appear through one of its keys or items (the
    offending one, `weights[0]=nan`) or a type name; any other object
    through its `repr`, `str` or type name. Arrays (and containers of
    arrays) need not appear.
    """
    if isinstance(value, np.ndarray):
        return ()
    if isinstance(value, PRIMITIVES):
        return tuple(dict.fromkeys((repr(value), str(value))))
    if isinstance(value, dict):
        parts = list(value) + list(value.values())
    elif isinstance(value, (list, tuple, set)):
        parts = list(value)
    else:
        parts = []
    if any(isinstance(part, np.ndarray) for part in parts):
        return ()
    shown = []
    for item in [value, *parts]:
        shown += [repr(item), str(item), type(item).__name__]
    return tuple(dict.fromkeys(shown))


def error(arguments, received=None, value=None, show_value=True):
    """Expects a ValueError/TypeError naming one of `arguments`.

    Args:
        arguments: str or tuple of str, the argument names (any one).
        received: optional tuple of strings, any of which shows the value.
        value: the bad value (its representations are the `received`).
        show_value: bool. Whether the message must show the value.
    """
    if isinstance(arguments, str):
        arguments = (arguments,)
    if received is None:
        received = representations(value) if show_value else ()
    elif isinstance(received, str):
        received = (received,)
    return Expect("error", arguments, tuple(received))


def correct(check, also_clear=()):
    """Expects a result for which `check(result)` is true.

    Args:
        check: callable taking the result, returning a bool.
        also_clear: argument names whose clear error is also acceptable
            (degenerate inputs where refusing is as good as answering).
    """
    if isinstance(also_clear, str):
        also_clear = (also_clear,)
    return Expect("correct", check=check, also_clear=tuple(also_clear))


# ----------------------------------------------------------------- judge
def _short(value, limit=160):
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - a result without a repr
        text = object.__repr__(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _names(message, arguments):
    """Whether `message` names one argument: `` `name`` or `name=`."""
    return any(f"`{name}" in message
               or re.search(rf"(?<![\w.]){re.escape(name)}=", message)
               for name in arguments)


def _judge_error(expect, exc):
    message = str(exc)
    what = f"{type(exc).__name__}: {_short(message, 300)}"
    if expect.kind == "correct":
        if expect.also_clear and _names(message, expect.also_clear):
            return "clear", what
        return "obscure", "error where a result was expected: " + what
    if not _names(message, expect.arguments):
        return "obscure", (f"does not name `{expect.arguments[0]}`: "
                           + what)
    if expect.received and not any(r in message for r in expect.received):
        return "obscure", (f"does not show {expect.received[0]}: " + what)
    return "clear", what


def _judge_result(expect, result):
    if expect.kind == "error":
        return "silent", "returned " + _short(result)
    try:
        good = bool(expect.check(result))
    except Exception as exc:
        return "silent", (f"check raised {type(exc).__name__}: {exc}; "
                          f"result {_short(result)}")
    if good:
        return "correct", _short(result)
    return "silent", "wrong result " + _short(result)


def _refuse_download(*args, **kwargs):
    raise RuntimeError(f"probe tried to download: {args} {kwargs}")


@contextlib.contextmanager
def _guarded():
    """No downloads, no data folder from the environment, quiet warnings."""
    saved_get_file = keras.utils.get_file
    saved_environment = {
        key: os.environ.pop(key, None)
        for key in ("MTLBOOK_DATA_DIR", "MTLBOOK_RESULTS_DIR")
    }
    keras.utils.get_file = _refuse_download
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        keras.utils.get_file = saved_get_file
        for key, value in saved_environment.items():
            if value is not None:
                os.environ[key] = value
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")


def classify(probe):
    """Runs one probe. Returns `(outcome, detail)`."""
    with _guarded():
        try:
            result = probe.call()
        except (ValueError, TypeError) as exc:
            return _judge_error(probe.expect, exc)
        except Exception as exc:
            return "obscure", f"{type(exc).__name__}: {_short(str(exc), 300)}"
        return _judge_result(probe.expect, result)


# ---------------------------------------------------------------- helpers
def numpy(value):
    """A tensor or array-like as a float64 NumPy array."""
    return np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")


def close(a, b, rtol=1e-4, atol=1e-6):
    """Whether `a` and `b` are finite and equal within tolerances."""
    a, b = numpy(a), numpy(b)
    return (a.shape == b.shape and np.all(np.isfinite(a))
            and np.allclose(a, b, rtol=rtol, atol=atol))


def finite(value):
    """Whether every entry of `value` is finite."""
    return bool(np.all(np.isfinite(numpy(value))))


def on_simplex(value, total=1.0):
    """Whether `value` is finite, >= 0 and sums to `total`."""
    value = numpy(value)
    return (finite(value) and np.all(value >= -1e-6)
            and abs(value.sum() - total) < 1e-4 * max(total, 1.0))


def not_finite(value):
    """Whether some entry is NaN or inf (a non-finite input propagates)."""
    return not finite(value)


BAD = {
    "positive_int": (0, -1, 1.5, True, "2", None, NAN),
    "int_ge0": (-1, 1.5, True, "2", None),
    "int_ge1_optional": (0, -1, 1.5, True, "2"),
    "positive_float": (0.0, -1.0, NAN, INF, True, "1", None),
    "float_ge0": (-1.0, NAN, INF, True, "1", None),
    "finite_float": (NAN, INF, True, "1", None),
    "unit": (-0.1, 1.1, NAN, True, "0.5", None),
    "open_unit": (0.0, 1.0, -0.1, NAN, True, "0.5", None),
    "half_open_unit": (-0.1, 1.0, NAN, True, "0.5", None),
    "seed": (1.5, "0"),
    "flag": ("False", 1, None),
    "units": (0, (), (0,), (-1,), (1.5,), (True,), "16", None),
}


def _label(value):
    """A short, repeatable text for a probe id (the same in every process,
    as pytest-xdist needs): arrays by shape, other objects by type."""
    if isinstance(value, np.ndarray):
        text = f"array{value.shape}"
        if value.dtype.kind == "f" and np.isnan(value).any():
            text += "-with-nan"
        return text
    if isinstance(value, PRIMITIVES):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_label(item) for item in value)
        if isinstance(value, tuple):
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        return f"[{inner}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_label(key)}: {_label(item)}"
                               for key, item in value.items()) + "}"
    if isinstance(value, type):
        return f"<class {value.__name__}>"
    return f"<{type(value).__name__}>"


def generated(prefix, file, function, base, specs, tensorflow=False):
    """Error probes, one per bad value of each parameter in `specs`.

    Args:
        prefix: str. Start of the probe ids.
        file: str. The package file that decides the behaviour.
        function: the public callable.
        base: dict of valid keyword arguments.
        specs: dict `{parameter: kind}` (a key of `BAD`) or
            `{parameter: tuple of bad values}`.
        tensorflow: bool. Whether the probes need the TensorFlow backend.

    Returns:
        List of `Probe`.
    """
    probes = []
    for parameter, kind in specs.items():
        values = BAD[kind] if isinstance(kind, str) else kind
        for value in values:
            def call(parameter=parameter, value=value):
                return function(**{**base, parameter: value})

            probes.append(Probe(
                f"{prefix}-{parameter}={_label(value)}", call,
                error(parameter, value=value), file, tensorflow))
    return probes


PROBES = []


def add(probe_id, call, expect, file, tensorflow=False):
    """Appends one hand-written probe to `PROBES`."""
    PROBES.append(Probe(probe_id, call, expect, file, tensorflow))


# ============================================================== weighting
W = "mtlbook/weighting/"


def _weighting():
    import mtlbook.weighting as weighting

    return weighting


G2 = np.array([[1.0, 0.0], [-0.5, 1.0]])
G3 = np.array([[1.0, 0.0, 0.5], [-0.5, 1.0, 0.0], [0.2, -1.0, 1.0]])
CONFLICT = np.array([[1.0, 0.0], [-1.0, 1.0]])


def _mgda_reference(gradients, steps=20001):
    """Min-norm simplex weights by brute force (T = 2) or projected descent."""
    gradients = np.asarray(gradients, "float64")
    gram = gradients @ gradients.T
    if len(gradients) == 2:
        grid = np.linspace(0.0, 1.0, steps)
        norms = [w * w * gram[0, 0] + 2 * w * (1 - w) * gram[0, 1]
                 + (1 - w) ** 2 * gram[1, 1] for w in grid]
        best = grid[int(np.argmin(norms))]
        return np.array([best, 1.0 - best])
    weights = np.full(len(gradients), 1.0 / len(gradients))
    for _ in range(20000):  # exponentiated gradient on the simplex
        weights = weights * np.exp(-0.5 * gram @ weights / gram.max())
        weights /= weights.sum()
    return weights


def _min_norm(weights, gradients):
    combination = numpy(weights) @ np.asarray(gradients, "float64")
    return float(combination @ combination)


def _weighting_probes():
    def mgda(*args, **kwargs):
        return _weighting().mgda_weights(*args, **kwargs)

    def pcgrad(*args, **kwargs):
        kwargs.setdefault("seed", 0)  # one task order, to compare results
        return _weighting().pcgrad(*args, **kwargs)

    def cagrad(*args, **kwargs):
        return _weighting().cagrad(*args, **kwargs)

    def cagrad_weights(*args, **kwargs):
        return _weighting().cagrad_weights(*args, **kwargs)

    def pcgrad_weights(*args, **kwargs):
        kwargs.setdefault("seed", 0)
        return _weighting().pcgrad_weights(*args, **kwargs)

    # documented examples and independent references
    add("mgda_weights-docstring-example",
        lambda: mgda([[1.0, 0.0], [0.0, 2.0]]),
        correct(lambda w: close(w, [0.8, 0.2])), W + "mgda.py")
    add("mgda_weights-T3-min-norm",
        lambda: mgda(G3),
        correct(lambda w: on_simplex(w) and _min_norm(w, G3)
                <= _min_norm(_mgda_reference(G3), G3) * 1.01 + 1e-9),
        W + "mgda.py")
    add("pcgrad-docstring-example", lambda: pcgrad(CONFLICT),
        correct(lambda d: close(d, [0.5, 1.5])), W + "pcgrad.py")
    add("cagrad-c0-is-mean-gradient", lambda: cagrad(G3, c=0.0),
        correct(lambda d: close(d, G3.mean(axis=0))), W + "cagrad.py")
    add("gram_matrix-docstring-example",
        lambda: _weighting().gram_matrix([[1.0, 0.0], [1.0, 2.0]]),
        correct(lambda m: close(m, [[1.0, 1.0], [1.0, 5.0]])), W + "base.py")
    add("gram_matrix-T3-numpy",
        lambda: _weighting().gram_matrix(G3),
        correct(lambda m: close(m, G3 @ G3.T)), W + "base.py")
    add("dwa_weights-docstring-example",
        lambda: _weighting().dwa_weights([1.0, 1.0], [2.0, 1.0]),
        correct(lambda w: close(w, 2 * np.exp([0.25, 0.5])
                                / np.exp([0.25, 0.5]).sum())), W + "dwa.py")
    add("gradnorm_weight_gradient-docstring-example",
        lambda: _weighting().gradnorm_weight_gradient(
            [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [2.0, 1.0]),
        correct(lambda g: close(g, [2.0, -1.0])), W + "gradnorm.py")

    # degenerate gradients: zeros, a zero row, one task
    zeros2, zeros3 = np.zeros((2, 4)), np.zeros((3, 4))
    zero_row = np.array([[0.0, 0.0], [1.0, 1.0]])
    zero_row3 = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    for name, function, file in (("mgda_weights", mgda, "mgda.py"),
                                 ("cagrad_weights", cagrad_weights,
                                  "cagrad.py"),
                                 ("pcgrad_weights", pcgrad_weights,
                                  "pcgrad.py")):
        total = 1.0 if name != "pcgrad_weights" else None
        check = (on_simplex if total else finite)
        add(f"{name}-all-zero-T2", lambda f=function: f(zeros2),
            correct(check), W + file)
        add(f"{name}-all-zero-T3", lambda f=function: f(zeros3),
            correct(check), W + file)
    add("mgda_weights-zero-row-T2", lambda: mgda(zero_row),
        correct(lambda w: close(w, [1.0, 0.0])), W + "mgda.py")
    add("mgda_weights-zero-row-T3", lambda: mgda(zero_row3),
        correct(lambda w: on_simplex(w)
                and _min_norm(w, zero_row3) < 1e-6), W + "mgda.py")
    add("mgda_weights-T1", lambda: mgda([[1.0, 2.0]]),
        correct(lambda w: close(w, [1.0])), W + "mgda.py")
    add("pcgrad-all-zero", lambda: pcgrad(zeros3),
        correct(lambda d: close(d, np.zeros(4))), W + "pcgrad.py")
    add("pcgrad-zero-row", lambda: pcgrad(zero_row3),
        correct(lambda d: close(d, pcgrad(zero_row3[1:]))), W + "pcgrad.py")
    add("pcgrad-T1", lambda: pcgrad([[1.0, 2.0]]),
        correct(lambda d: close(d, [1.0, 2.0])), W + "pcgrad.py")
    add("cagrad-all-zero", lambda: cagrad(zeros3),
        correct(lambda d: close(d, np.zeros(4))), W + "cagrad.py")
    add("cagrad-T1-parallel", lambda: cagrad([[1.0, 2.0]]),
        correct(lambda d: finite(d) and abs(numpy(d)[1] - 2 * numpy(d)[0])
                < 1e-5), W + "cagrad.py")

    # scale: the weights are scale-invariant, the updates scale-equivariant
    for scale in (1e-30, 1e30):
        for label, gradients in (("T2", G2), ("T3", G3)):
            add(f"mgda_weights-scale-{scale:g}-{label}",
                lambda s=scale, g=gradients: mgda(g * s),
                correct(lambda w, g=gradients: close(w, mgda(g), atol=1e-4),
                        also_clear="task_gradients"), W + "mgda.py")
            add(f"pcgrad-scale-{scale:g}-{label}",
                lambda s=scale, g=gradients: numpy(pcgrad(g * s)) / s,
                correct(lambda d, g=gradients: close(d, pcgrad(g)),
                        also_clear="task_gradients"), W + "pcgrad.py")
            add(f"cagrad-scale-{scale:g}-{label}",
                lambda s=scale, g=gradients: numpy(cagrad(g * s)) / s,
                correct(lambda d, g=gradients: close(d, cagrad(g)),
                        also_clear="task_gradients"), W + "cagrad.py")
    for label, function, file in (("mgda_weights", mgda, "mgda.py"),
                                  ("pcgrad", pcgrad, "pcgrad.py"),
                                  ("cagrad", cagrad, "cagrad.py")):
        add(f"{label}-float16",
            lambda f=function: f(G3.astype("float16")),
            correct(lambda r, f=function: close(r, f(G3), rtol=2e-3,
                                                atol=2e-3)), W + file)
        # a non-finite gradient must give a non-finite update (so that a
        # LossScaleOptimizer skips the step) or a clear error; MGDA is
        # probed through its layer, whose update is what training applies
        update = function if label != "mgda_weights" else (
            lambda g: _weighting().MGDA()(g))
        name = label if label != "mgda_weights" else "MGDA"
        for bad_name, bad in (("nan", NAN), ("inf", INF)):
            gradients = G3.copy()
            gradients[1, 0] = bad
            add(f"{name}-{bad_name}-gradient",
                lambda f=update, g=gradients: f(g),
                correct(not_finite, also_clear="task_gradients"), W + file)
        add(f"{label}-rank-1", lambda f=function: f([1.0, 2.0]),
            error("task_gradients", "(2,)"), W + file)
        add(f"{label}-rank-3", lambda f=function: f(np.ones((2, 2, 2))),
            error("task_gradients", "(2, 2, 2)"), W + file)
        add(f"{label}-no-tasks", lambda f=function: f(np.zeros((0, 3))),
            error("task_gradients", "(0, 3)"), W + file)
        add(f"{label}-strings", lambda f=function: f([["a", "b"]]),
            error("task_gradients", show_value=False), W + file)

    # hyper-parameters of the functions
    PROBES.extend(generated("mgda_weights", W + "mgda.py", mgda,
                            {"task_gradients": G3},
                            {"max_iterations": "positive_int"}))
    PROBES.extend(generated("cagrad", W + "cagrad.py", cagrad,
                            {"task_gradients": G3},
                            {"c": "float_ge0",
                             "max_iterations": "positive_int"}))
    PROBES.extend(generated("cagrad_weights", W + "cagrad.py",
                            cagrad_weights, {"task_gradients": G3},
                            {"c": "float_ge0",
                             "max_iterations": "positive_int"}))
    PROBES.extend(generated(
        "task_order", W + "pcgrad.py",
        lambda **kw: _weighting().task_order(**kw),
        {"num_tasks": 3, "seed": 0},
        {"num_tasks": "positive_int", "seed": (1.5, "0", True),
         "step": (1.5, "0", None, True)}))
    add("task_order-permutation", lambda: _weighting().task_order(
        6, seed=3, step=11),
        correct(lambda o: sorted(numpy(o).astype(int)) == list(range(6))),
        W + "pcgrad.py")
    PROBES.extend(generated(
        "pcgrad", W + "pcgrad.py", pcgrad, {"task_gradients": G3},
        {"seed": (1.5, "0", True), "step": (1.5, "0", None, True)}))

    # base helpers
    add("check_task_gradients-rank-1",
        lambda: _weighting().check_task_gradients([1.0, 2.0]),
        error("task_gradients", "(2,)"), W + "base.py")
    add("check_task_gradients-no-tasks",
        lambda: _weighting().check_task_gradients(np.zeros((0, 2))),
        error("task_gradients", "(0, 2)"), W + "base.py")
    add("gram_matrix-rank-1", lambda: _weighting().gram_matrix([1.0, 2.0]),
        error("task_gradients", "(2,)"), W + "base.py")
    add("gram_matrix-float16", lambda: _weighting().gram_matrix(
        G3.astype("float16")),
        correct(lambda m: close(m, G3 @ G3.T, rtol=2e-3, atol=2e-3)),
        W + "base.py")
    variables = [keras.Variable(np.zeros((2, 2)), name="probe_kernel"),
                 keras.Variable(np.zeros((2,)), name="probe_bias")]
    add("flatten_gradients-None-is-zeros",
        lambda: _weighting().flatten_gradients([None, np.ones(2)],
                                               variables),
        correct(lambda v: close(v, [0, 0, 0, 0, 1, 1])), W + "base.py")
    add("flatten_gradients-length-mismatch",
        lambda: _weighting().flatten_gradients([np.ones((2, 2))], variables),
        error(("gradients", "variables"), "1"), W + "base.py")
    add("flatten_gradients-shape-mismatch",
        lambda: _weighting().flatten_gradients(
            [np.ones((3,)), np.ones(2)], variables),
        error("gradients", "(3,)"), W + "base.py")
    add("unflatten_gradients-round-trip",
        lambda: _weighting().unflatten_gradients(
            keras.ops.arange(6, dtype="float32"), variables),
        correct(lambda p: close(p[0], [[0, 1], [2, 3]])
                and close(p[1], [4, 5])), W + "base.py")
    add("unflatten_gradients-wrong-size",
        lambda: _weighting().unflatten_gradients(
            keras.ops.ones((5,)), variables),
        error("vector", "(5,)"), W + "base.py")
    add("unflatten_gradients-list-vector",
        lambda: _weighting().unflatten_gradients([0.0] * 6, variables),
        correct(lambda p: close(p[1], [0, 0]), also_clear="vector"),
        W + "base.py")

    # dwa_weights
    def dwa(**kw):
        return _weighting().dwa_weights(**kw)

    base = {"previous_losses": [1.0, 1.0], "earlier_losses": [2.0, 1.0]}
    PROBES.extend(generated("dwa_weights", W + "dwa.py", dwa, base,
                            {"temperature": "positive_float"}))
    add("dwa_weights-length-mismatch",
        lambda: dwa(previous_losses=[1.0, 1.0], earlier_losses=[1.0] * 3),
        error(("previous_losses", "earlier_losses"), show_value=False),
        W + "dwa.py")
    add("dwa_weights-one-earlier-loss",
        lambda: dwa(previous_losses=[1.0, 1.0], earlier_losses=[1.0]),
        error(("previous_losses", "earlier_losses"), show_value=False),
        W + "dwa.py")
    add("dwa_weights-zero-earlier-loss",
        lambda: dwa(previous_losses=[1.0, 1.0], earlier_losses=[0.0, 1.0]),
        correct(lambda w: on_simplex(w, 2.0), also_clear="earlier_losses"),
        W + "dwa.py")
    add("dwa_weights-zero-losses",
        lambda: dwa(previous_losses=[0.0, 1.0], earlier_losses=[0.0, 1.0]),
        correct(lambda w: on_simplex(w, 2.0),
                also_clear=("earlier_losses", "previous_losses")),
        W + "dwa.py")
    add("dwa_weights-inf-loss",
        lambda: dwa(previous_losses=[INF, 1.0], earlier_losses=[1.0, 1.0]),
        correct(lambda w: on_simplex(w, 2.0),
                also_clear=("previous_losses",)), W + "dwa.py")
    for scale in (1e-30, 1e30):
        add(f"dwa_weights-scale-{scale:g}",
            lambda s=scale: dwa(previous_losses=[s, 2 * s],
                                earlier_losses=[2 * s, 2 * s]),
            correct(lambda w: close(w, dwa(previous_losses=[1.0, 2.0],
                                           earlier_losses=[2.0, 2.0]))),
            W + "dwa.py")
    add("dwa_weights-T1", lambda: dwa(previous_losses=[1.0],
                                      earlier_losses=[2.0]),
        correct(lambda w: close(w, [1.0])), W + "dwa.py")

    # gradnorm_weight_gradient
    def gradnorm_gradient(**kw):
        return _weighting().gradnorm_weight_gradient(**kw)

    base = {"weights": [1.0, 1.0], "task_losses": [1.0, 1.0],
            "initial_losses": [1.0, 1.0], "gradient_norms": [2.0, 1.0]}
    PROBES.extend(generated("gradnorm_weight_gradient", W + "gradnorm.py",
                            gradnorm_gradient, base,
                            {"alpha": "float_ge0"}))
    for argument in ("weights", "task_losses", "initial_losses",
                     "gradient_norms"):
        add(f"gradnorm_weight_gradient-{argument}-length-3",
            lambda a=argument: gradnorm_gradient(**{**base, a: [1.0] * 3}),
            error(("weights", "task_losses", "initial_losses",
                   "gradient_norms"), show_value=False), W + "gradnorm.py")
    add("gradnorm_weight_gradient-zero-initial-loss",
        lambda: gradnorm_gradient(**{**base, "initial_losses": [0.0, 1.0]}),
        correct(finite, also_clear="initial_losses"), W + "gradnorm.py")
    add("gradnorm_weight_gradient-zero-losses",
        lambda: gradnorm_gradient(**{**base, "task_losses": [0.0, 0.0]}),
        correct(finite, also_clear="task_losses"), W + "gradnorm.py")

    # strategy constructors
    for name, extra, file in (
            ("EqualWeighting", {}, "base.py"),
            ("UncertaintyWeighting", {}, "uncertainty.py"),
            ("DynamicWeightAverage", {}, "dwa.py"),
            ("GradNorm", {}, "gradnorm.py"),
            ("PCGrad", {}, "pcgrad.py"),
            ("MGDA", {}, "mgda.py"),
            ("CAGrad", {}, "cagrad.py"),
            ("LossWeighting", {}, "base.py"),
            ("GradientMethod", {}, "base.py"),
            ("Strategy", {}, "base.py")):
        PROBES.extend(generated(
            name, W + file,
            lambda n=name, **kw: getattr(_weighting(), n)(**kw), extra,
            {"num_tasks": "int_ge1_optional"}))
    def strategy(name, **kw):
        return getattr(_weighting(), name)(**kw)

    PROBES.extend(generated(
        "UncertaintyWeighting", W + "uncertainty.py",
        functools.partial(strategy, "UncertaintyWeighting"), {},
        {"initial_log_variance": "finite_float"}))
    PROBES.extend(generated(
        "DynamicWeightAverage", W + "dwa.py",
        functools.partial(strategy, "DynamicWeightAverage"), {},
        {"temperature": "positive_float"}))
    PROBES.extend(generated(
        "GradNorm", W + "gradnorm.py",
        functools.partial(strategy, "GradNorm"), {},
        {"alpha": "float_ge0", "learning_rate": "positive_float",
         "min_weight": "float_ge0", "layer": (1, True, ["dense"])}))
    PROBES.extend(generated(
        "PCGrad", W + "pcgrad.py", functools.partial(strategy, "PCGrad"),
        {}, {"seed": (1.5, "0", True, None)}))
    PROBES.extend(generated(
        "MGDA", W + "mgda.py", functools.partial(strategy, "MGDA"), {},
        {"max_iterations": "positive_int"}))
    PROBES.extend(generated(
        "CAGrad", W + "cagrad.py", functools.partial(strategy, "CAGrad"),
        {}, {"c": "float_ge0", "max_iterations": "positive_int"}))
    PROBES.extend(generated(
        "StaticWeighting", W + "static.py",
        functools.partial(strategy, "StaticWeighting"), {},
        {"weights": ((), (-1.0, 1.0), (NAN, 1.0), (INF, 1.0),
                     (True, 1.0), ("1", 1.0), "12", None, 2.0,
                     {"a": NAN}, {"a": -1.0}, {}, {"a": True})}))

    def built(name, tasks=("a", "b"), **kw):
        instance = getattr(_weighting(), name)(**kw)
        instance.set_tasks(list(tasks))
        return instance

    # set_tasks and task-name mismatches
    for value in ("ab", [], ["a", "a"], ["a", 1], None, [("a",)]):
        add(f"Strategy.set_tasks-task_names={value!r}",
            lambda v=value: _weighting().EqualWeighting().set_tasks(v),
            error("task_names", value=value), W + "base.py")
    add("StaticWeighting-list-3-for-2-tasks",
        lambda: built("StaticWeighting", weights=[1.0, 1.0, 1.0]),
        error(("weights", "num_tasks", "task_names"), "3"), W + "static.py")
    add("StaticWeighting-dict-unknown-task",
        lambda: built("StaticWeighting", weights={"a": 1.0, "c": 2.0}),
        error("weights", "c"), W + "static.py")
    add("StaticWeighting-dict-order",
        lambda: built("StaticWeighting", weights={"b": 2.0, "a": 1.0})
        .task_weights(),
        correct(lambda w: close(w, [1.0, 2.0])), W + "static.py")
    add("EqualWeighting-num_tasks-3-for-2-tasks",
        lambda: built("EqualWeighting", num_tasks=3),
        error(("num_tasks", "task_names"), "2"), W + "base.py")
    add("EqualWeighting-set_tasks-twice-different",
        lambda: built("EqualWeighting").set_tasks(["a", "c"]),
        error("task_names", "c"), W + "base.py")

    # losses of the wrong length or value
    for name in ("EqualWeighting", "UncertaintyWeighting",
                 "DynamicWeightAverage", "GradNorm"):
        # DWA and GradNorm use `Strategy.combine_losses` of base.py
        file = ("uncertainty.py" if name == "UncertaintyWeighting"
                else "base.py")
        for label, losses in (("1", [1.0]), ("3", [1.0, 2.0, 3.0]),
                              ("2x1", [[1.0], [2.0]])):
            add(f"{name}.combine_losses-{label}-losses-for-2-tasks",
                lambda n=name, v=losses: built(n).combine_losses(
                    keras.ops.convert_to_tensor(v)),
                error("task_losses", show_value=False), W + file)
    add("StaticWeighting.combine_losses-1-loss-for-2-tasks",
        lambda: built("StaticWeighting", weights=[1.0, 2.0])
        .combine_losses(keras.ops.convert_to_tensor([1.0])),
        error("task_losses", show_value=False), W + "static.py")
    add("EqualWeighting.combine_gradients-3-rows-for-2-tasks",
        lambda: built("EqualWeighting").combine_gradients(np.ones((3, 2))),
        error("task_gradients", "(3, 2)"), W + "base.py")
    add("MGDA.combine_gradients-3-rows-for-2-tasks",
        lambda: built("MGDA").combine_gradients(np.ones((3, 2))),
        error("task_gradients", "(3, 2)"), W + "base.py")
    add("PCGrad.combine_gradients-3-rows-for-2-tasks",
        lambda: built("PCGrad").combine_gradients(np.ones((3, 2))),
        error("task_gradients", "(3, 2)"), W + "base.py")
    add("CAGrad.combine_gradients-3-rows-for-2-tasks",
        lambda: built("CAGrad").combine_gradients(np.ones((3, 2))),
        error("task_gradients", "(3, 2)"), W + "base.py")
    add("MGDA.combine_gradients-update",
        lambda: built("MGDA").combine_gradients(CONFLICT),
        correct(lambda d: close(d, 2 * numpy(mgda(CONFLICT)) @ CONFLICT)),
        W + "mgda.py")
    add("UncertaintyWeighting.combine_losses-value",
        lambda: built("UncertaintyWeighting").combine_losses(
            keras.ops.convert_to_tensor([1.0, 4.0])),
        correct(lambda t: close(t, 2.5)), W + "uncertainty.py")

    # DWA over epochs with zero losses
    def dwa_epochs(losses_per_epoch):
        instance = built("DynamicWeightAverage")
        for losses in losses_per_epoch:
            instance.update_epoch(losses)
        return instance.task_weights()

    add("DynamicWeightAverage-zero-loss-two-epochs",
        lambda: dwa_epochs([[0.0, 1.0], [0.0, 1.0]]),
        correct(lambda w: on_simplex(w, 2.0), also_clear="mean_losses"),
        W + "dwa.py")
    add("DynamicWeightAverage-nan-mean-loss",
        lambda: dwa_epochs([[NAN, 1.0], [1.0, 1.0]]),
        correct(lambda w: on_simplex(w, 2.0), also_clear="mean_losses"),
        W + "dwa.py")
    add("DynamicWeightAverage-mean_losses-length-3",
        lambda: dwa_epochs([[1.0, 1.0, 1.0]]),
        error("mean_losses", "(3,)"), W + "dwa.py")
    add("DynamicWeightAverage-weights-three-epochs",
        lambda: dwa_epochs([[2.0, 1.0], [1.0, 1.0], [1.0, 1.0]]),
        correct(lambda w: close(w, dwa(previous_losses=[1.0, 1.0],
                                       earlier_losses=[1.0, 1.0]))),
        W + "dwa.py")

    # GradNorm steps with zero or infinite losses
    def gradnorm_steps(losses, norms, steps=2):
        instance = built("GradNorm")
        for _ in range(steps):
            instance.update_step(keras.ops.convert_to_tensor(losses),
                                 keras.ops.convert_to_tensor(norms))
        return instance.task_weights()

    add("GradNorm.update_step-zero-losses",
        lambda: gradnorm_steps([0.0, 0.0], [1.0, 2.0]),
        correct(lambda w: on_simplex(w, 2.0)), W + "gradnorm.py")
    add("GradNorm.update_step-inf-loss",
        lambda: gradnorm_steps([INF, 1.0], [1.0, 2.0]),
        correct(lambda w: on_simplex(w, 2.0), also_clear="task_losses"),
        W + "gradnorm.py")
    add("GradNorm.update_step-zero-norms",
        lambda: gradnorm_steps([1.0, 1.0], [0.0, 0.0]),
        correct(lambda w: on_simplex(w, 2.0)), W + "gradnorm.py")
    add("GradNorm.update_step-no-norms",
        lambda: built("GradNorm").update_step(
            keras.ops.convert_to_tensor([1.0, 1.0])),
        error("gradient_norms", "None"), W + "gradnorm.py")
    add("GradNorm.update_step-norms-length-3",
        lambda: gradnorm_steps([1.0, 1.0], [1.0, 1.0, 1.0], steps=1),
        error("gradient_norms", show_value=False), W + "gradnorm.py")
    add("UpdateEpoch-strategy-str",
        lambda: _weighting().UpdateEpoch("equal"),
        error("strategy", value="equal"), W + "base.py")
    for name, file in (("MGDA", "mgda.py"), ("PCGrad", "pcgrad.py"),
                       ("CAGrad", "cagrad.py")):
        add(f"{name}-call-T3-zero-gradients",
            lambda n=name: built(n, tasks=("a", "b", "c"))(zeros3),
            correct(lambda d: close(d, np.zeros(4))), W + file)


_weighting_probes()


def _rlw_famo_probes():
    def strategy(name, **kw):
        return getattr(_weighting(), name)(**kw)

    def built(name, tasks=("a", "b"), **kw):
        instance = strategy(name, **kw)
        instance.set_tasks(list(tasks))
        return instance

    def rlw(**kw):
        return _weighting().random_loss_weights(**kw)

    def draw(**kw):
        return _weighting().standard_normal_draw(**kw)

    def famo(**kw):
        return _weighting().famo_weights(**kw)

    def famo_gradient(**kw):
        return _weighting().famo_logit_gradient(**kw)

    seeds = (1.5, "0", True, None, -1, 2 ** 32)
    steps = (-1, 1.5, True, "2", None, np.ones(2, "int32"))
    for name, file in (("RandomLossWeighting", "rlw.py"),
                       ("FAMO", "famo.py")):
        PROBES.extend(generated(
            name, W + file, functools.partial(strategy, name), {},
            {"num_tasks": "int_ge1_optional"}))
    PROBES.extend(generated(
        "RandomLossWeighting", W + "rlw.py",
        functools.partial(strategy, "RandomLossWeighting"), {},
        {"seed": seeds}))
    PROBES.extend(generated(
        "FAMO", W + "famo.py", functools.partial(strategy, "FAMO"), {},
        {"learning_rate": "positive_float", "weight_decay": "float_ge0",
         "epsilon": "float_ge0"}))
    for prefix, function in (("random_loss_weights", rlw),
                             ("standard_normal_draw", draw)):
        PROBES.extend(generated(
            prefix, W + "rlw.py", function,
            {"num_tasks": 2, "seed": 0, "step": 0},
            {"num_tasks": "positive_int", "seed": seeds, "step": steps}))
    add("random_loss_weights-docstring-example",
        lambda: rlw(num_tasks=2, seed=0, step=0),
        correct(lambda w: on_simplex(w, 2.0)), W + "rlw.py")
    add("random_loss_weights-one-task",
        lambda: rlw(num_tasks=1, seed=0, step=0),
        correct(lambda w: close(w, [1.0])), W + "rlw.py")
    add("random_loss_weights-tensor-step",
        lambda: rlw(num_tasks=3, seed=1,
                    step=keras.ops.convert_to_tensor(5, "int32")),
        correct(lambda w: close(w, rlw(num_tasks=3, seed=1, step=5))),
        W + "rlw.py")
    add("standard_normal_draw-step-2**40",
        lambda: draw(num_tasks=4, seed=0, step=2 ** 40),
        correct(finite), W + "rlw.py")
    add("RandomLossWeighting.combine_losses-3-losses-for-2-tasks",
        lambda: built("RandomLossWeighting").combine_losses(
            keras.ops.convert_to_tensor([1.0, 2.0, 3.0])),
        error("task_losses", show_value=False), W + "base.py")
    add("RandomLossWeighting.update_step-1-loss-for-2-tasks",
        lambda: built("RandomLossWeighting").update_step([1.0]),
        error("task_losses", show_value=False), W + "base.py")
    add("RandomLossWeighting.combine_losses-before-set_tasks",
        lambda: strategy("RandomLossWeighting").combine_losses([1.0, 1.0]),
        error("num_tasks", "None"), W + "rlw.py")

    base = {"logits": [0.0, 0.0], "task_losses": [1.0, 3.0]}
    PROBES.extend(generated("famo_weights", W + "famo.py", famo, base,
                            {"epsilon": "float_ge0"}))
    add("famo_weights-docstring-example",
        lambda: famo(logits=[0.0, 0.0], task_losses=[1.0, 3.0]),
        correct(lambda w: close(w, [0.75, 0.25])), W + "famo.py")
    add("famo_weights-length-mismatch",
        lambda: famo(logits=[0.0, 0.0], task_losses=[1.0, 1.0, 1.0]),
        error("task_losses", "(3,)"), W + "famo.py")
    add("famo_weights-logits-2d",
        lambda: famo(logits=[[0.0, 0.0]], task_losses=[1.0, 1.0]),
        error("logits", "(1, 2)"), W + "famo.py")
    add("famo_weights-zero-loss",
        lambda: famo(logits=[0.0, 0.0], task_losses=[0.0, 1.0]),
        correct(lambda w: on_simplex(w, 1.0)), W + "famo.py")
    add("famo_weights-extreme-losses",
        lambda: famo(logits=[0.0, 0.0], task_losses=[1e-30, 1e30],
                     epsilon=0.0),
        correct(lambda w: close(w, [1.0, 0.0])), W + "famo.py")
    add("famo_weights-nan-loss",
        lambda: famo(logits=[0.0, 0.0], task_losses=[NAN, 1.0]),
        correct(lambda w: bool(np.all(np.isnan(numpy(w)))),
                also_clear="task_losses"), W + "famo.py")
    base = {"logits": [0.0, 0.0], "previous_losses": [1.0, 1.0],
            "task_losses": [0.5, 1.0]}
    PROBES.extend(generated(
        "famo_logit_gradient", W + "famo.py", famo_gradient, base,
        {"weight_decay": "float_ge0", "epsilon": "float_ge0"}))
    add("famo_logit_gradient-docstring-example",
        lambda: famo_gradient(**base),
        correct(lambda g: close(g, [math.log(2) / 4, -math.log(2) / 4])),
        W + "famo.py")
    add("famo_logit_gradient-length-mismatch",
        lambda: famo_gradient(**{**base, "previous_losses": [1.0]}),
        error("previous_losses", "(1,)"), W + "famo.py")

    def famo_steps(losses_per_step):
        instance = built("FAMO")
        for losses in losses_per_step:
            instance.update_step(keras.ops.convert_to_tensor(losses))
        return instance.task_weights()

    add("FAMO.update_step-nan-loss",
        lambda: famo_steps([[1.0, 2.0], [NAN, 1.0], [0.5, 1.5]]),
        correct(lambda w: on_simplex(w, 1.0), also_clear="task_losses"),
        W + "famo.py")
    add("FAMO.update_step-zero-losses",
        lambda: famo_steps([[1.0, 2.0], [0.0, 0.0]]),
        correct(lambda w: on_simplex(w, 1.0)), W + "famo.py")
    add("FAMO.update_step-3-losses-for-2-tasks",
        lambda: famo_steps([[1.0, 2.0, 3.0]]),
        error("task_losses", "(3,)"), W + "famo.py")
    add("FAMO.combine_losses-1-loss-for-2-tasks",
        lambda: built("FAMO").combine_losses(
            keras.ops.convert_to_tensor([1.0])),
        error("task_losses", show_value=False), W + "base.py")
    add("FAMO.combine_losses-value",
        lambda: built("FAMO").combine_losses(
            keras.ops.convert_to_tensor([1.0, 3.0])),
        correct(lambda t: close(t, 1.5)), W + "famo.py")


_rlw_famo_probes()


def _nash_probes():
    file = W + "nash.py"

    def nash(*args, **kwargs):
        return _weighting().nash_mtl(*args, **kwargs)

    def nash_weights(*args, **kwargs):
        return _weighting().nash_mtl_weights(*args, **kwargs)

    def fixed_point(weights, gradients, ridge=1e-4):
        """`alpha_i ((G G^T + ridge diag |g_i|^2) alpha)_i`, all ones."""
        matrix = gradients @ gradients.T + ridge * np.diag(
            np.sum(gradients ** 2, axis=1))
        return numpy(weights) * (matrix @ numpy(weights))

    add("nash_mtl_weights-docstring-example",
        lambda: nash_weights([[1.0, 0.0], [0.0, 2.0]]),
        correct(lambda w: close(w, [1.0, 0.5], rtol=1e-3)), file)
    add("nash_mtl-docstring-example",
        lambda: nash([[1.0, 0.0], [0.0, 2.0]], max_norm=0.0),
        correct(lambda d: close(d, [1.0, 1.0], rtol=1e-3)), file)
    add("nash_mtl_weights-T3-fixed-point", lambda: nash_weights(G3),
        correct(lambda w: close(fixed_point(w, G3), np.ones(3))), file)
    add("nash_mtl-T3-clipped-to-max-norm", lambda: nash(G3, max_norm=1.0),
        correct(lambda d: abs(np.linalg.norm(numpy(d)) - 1.0) < 1e-5), file)
    add("NashMTL-T3-is-nash_mtl",
        lambda: _weighting().NashMTL()(G3, step=0),
        correct(lambda d: close(d, nash(G3))), file)

    # degenerate gradients: zeros, a zero row, opposite, one task
    zeros3 = np.zeros((3, 4))
    zero_row3 = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    opposite = np.array([[1.0, 2.0], [-1.0, -2.0]])
    add("nash_mtl-all-zero", lambda: nash(zeros3),
        correct(lambda d: close(d, np.zeros(4))), file)
    add("nash_mtl_weights-all-zero", lambda: nash_weights(zeros3),
        correct(lambda w: close(w, np.zeros(3))), file)
    add("nash_mtl_weights-zero-row", lambda: nash_weights(zero_row3),
        correct(lambda w: numpy(w)[0] == 0.0 and close(
            numpy(w)[1:], nash_weights(zero_row3[1:]))), file)
    add("nash_mtl-opposite-is-zero", lambda: nash(opposite),
        correct(lambda d: close(d, [0.0, 0.0], atol=1e-4)), file)
    add("nash_mtl_weights-opposite-finite", lambda: nash_weights(opposite),
        correct(finite), file)
    add("nash_mtl-T1", lambda: nash([[3.0, -4.0]], max_norm=0.0),
        correct(lambda d: close(d, [0.6, -0.8])), file)

    # scale: the update is invariant, the weights scale as 1 / scale
    for scale in (1e-30, 1e30):
        for label, gradients in (("T2", G2), ("T3", G3)):
            add(f"nash_mtl-scale-{scale:g}-{label}",
                lambda s=scale, g=gradients: nash(g * s),
                correct(lambda d, g=gradients: close(d, nash(g)),
                        also_clear="task_gradients"), file)
            add(f"nash_mtl_weights-scale-{scale:g}-{label}",
                lambda s=scale, g=gradients: numpy(nash_weights(g * s)) * s,
                correct(lambda w, g=gradients: close(w, nash_weights(g)),
                        also_clear="task_gradients"), file)
    for label, function in (("nash_mtl", nash),
                            ("nash_mtl_weights", nash_weights)):
        add(f"{label}-float16",
            lambda f=function: f(G3.astype("float16")),
            correct(lambda r, f=function: close(r, f(G3), rtol=2e-3,
                                                atol=2e-3)), file)
        add(f"{label}-rank-1", lambda f=function: f([1.0, 2.0]),
            error("task_gradients", "(2,)"), file)
        add(f"{label}-rank-3", lambda f=function: f(np.ones((2, 2, 2))),
            error("task_gradients", "(2, 2, 2)"), file)
        add(f"{label}-no-tasks", lambda f=function: f(np.zeros((0, 3))),
            error("task_gradients", "(0, 3)"), file)
        add(f"{label}-strings", lambda f=function: f([["a", "b"]]),
            error("task_gradients", show_value=False), file)
    # a non-finite gradient gives a non-finite update
    for name, update in (("nash_mtl", nash),
                         ("NashMTL", lambda g: _weighting().NashMTL()(g))):
        for bad_name, bad in (("nan", NAN), ("inf", INF)):
            gradients = G3.copy()
            gradients[1, 0] = bad
            add(f"{name}-{bad_name}-gradient",
                lambda f=update, g=gradients: f(g),
                correct(not_finite, also_clear="task_gradients"), file)

    # hyper-parameters
    PROBES.extend(generated(
        "nash_mtl", file, nash, {"task_gradients": G3},
        {"max_norm": "float_ge0", "ridge": "float_ge0",
         "iterations": "positive_int"}))
    PROBES.extend(generated(
        "nash_mtl_weights", file, nash_weights, {"task_gradients": G3},
        {"ridge": "float_ge0", "iterations": "positive_int"}))
    PROBES.extend(generated(
        "NashMTL", file, lambda **kw: _weighting().NashMTL(**kw), {},
        {"num_tasks": "int_ge1_optional", "max_norm": "float_ge0",
         "update_weights_every": "positive_int", "ridge": "float_ge0",
         "iterations": "positive_int"}))


_nash_probes()


def _imtl_aligned_probes():
    """IMTL-G (imtl.py) and Aligned-MTL (aligned.py)."""
    def weighting(name):
        return lambda *args, **kw: getattr(_weighting(), name)(*args, **kw)

    imtl_weights, imtl_g = weighting("imtl_weights"), weighting("imtl_g")
    aligned_weights = weighting("aligned_mtl_weights")
    aligned = weighting("aligned_mtl")
    hand = np.array([[1.0, 0.0], [0.0, 2.0]])

    def imtl_reference(gradients):
        """The paper's closed form, `alpha_{2:T} = g_1 U^T (D U^T)^-1`."""
        g = np.asarray(gradients, "float64")
        u = g / np.linalg.norm(g, axis=1, keepdims=True)
        rest = g[0] @ (u[0] - u[1:]).T @ np.linalg.inv(
            (g[0] - g[1:]) @ (u[0] - u[1:]).T)
        return np.concatenate([[1.0 - rest.sum()], rest])

    def aligned_reference(gradients):
        """`sigma U S^-1 U^T w` from the SVD `G = U S W^T`, `w = 1/T`."""
        left, singular, _ = np.linalg.svd(np.asarray(gradients, "float64"),
                                          full_matrices=False)
        weights = np.full(len(gradients), 1.0 / len(gradients))
        return left @ (singular.min() / singular * (left.T @ weights))

    def equal_projections(update, gradients):
        g = np.asarray(gradients, "float64")
        projections = g @ numpy(update) / np.linalg.norm(g, axis=1)
        return finite(update) and np.allclose(projections, projections[0],
                                              rtol=1e-4)

    # documented examples and independent references
    add("imtl_weights-docstring-example", lambda: imtl_weights(hand),
        correct(lambda w: close(w, [2 / 3, 1 / 3])), W + "imtl.py")
    add("imtl_g-docstring-example", lambda: imtl_g(hand),
        correct(lambda d: close(d, [2 / 3, 2 / 3])), W + "imtl.py")
    add("imtl_weights-T3-paper-closed-form", lambda: imtl_weights(G3),
        correct(lambda w: close(w, imtl_reference(G3), atol=1e-5)),
        W + "imtl.py")
    add("imtl_g-T3-equal-projections", lambda: imtl_g(G3),
        correct(lambda d: equal_projections(d, G3)), W + "imtl.py")
    add("aligned_mtl_weights-docstring-example",
        lambda: aligned_weights(hand),
        correct(lambda w: close(w, [0.5, 0.25])), W + "aligned.py")
    add("aligned_mtl-docstring-example", lambda: aligned(hand),
        correct(lambda d: close(d, [0.5, 0.5])), W + "aligned.py")
    add("aligned_mtl_weights-T3-svd", lambda: aligned_weights(G3),
        correct(lambda w: close(w, aligned_reference(G3), atol=1e-5)),
        W + "aligned.py")

    # degenerate gradients: zeros, a zero row, duplicated, opposite, one task
    zeros3 = np.zeros((3, 4))
    zero_row3 = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    g = np.array([1.0, 2.0, -2.0])
    add("imtl_weights-all-zero", lambda: imtl_weights(zeros3),
        correct(lambda w: close(w, np.full(3, 1 / 3))), W + "imtl.py")
    add("imtl_g-all-zero", lambda: imtl_g(zeros3),
        correct(lambda d: close(d, np.zeros(4))), W + "imtl.py")
    add("imtl_weights-zero-row", lambda: imtl_weights(zero_row3),
        correct(lambda w: close(w, [0.0, *numpy(imtl_weights(
            zero_row3[1:]))])), W + "imtl.py")
    add("imtl_weights-duplicated", lambda: imtl_weights(np.stack([g, g])),
        correct(lambda w: close(w, [0.5, 0.5])), W + "imtl.py")
    add("imtl_g-opposite", lambda: imtl_g(np.stack([g, -2 * g])),
        correct(lambda d: close(d, np.zeros(3), atol=1e-5)), W + "imtl.py")
    add("imtl_g-T1", lambda: imtl_g([[1.0, 2.0]]),
        correct(lambda d: close(d, [1.0, 2.0])), W + "imtl.py")
    add("aligned_mtl_weights-all-zero", lambda: aligned_weights(zeros3),
        correct(lambda w: close(w, np.zeros(3))), W + "aligned.py")
    add("aligned_mtl-zero-row", lambda: aligned_weights(zero_row3),
        correct(lambda w: finite(w) and numpy(w)[0] == 0.0),
        W + "aligned.py")
    add("aligned_mtl-duplicated", lambda: aligned(np.stack([g, g])),
        correct(lambda d: close(d, g)), W + "aligned.py")
    add("aligned_mtl-opposite", lambda: aligned(np.stack([g, -g])),
        correct(lambda d: close(d, np.zeros(3))), W + "aligned.py")
    add("aligned_mtl-T1", lambda: aligned([[1.0, 2.0]]),
        correct(lambda d: close(d, [1.0, 2.0])), W + "aligned.py")

    # scale, float16, non-finite gradients, bad gradients
    for label, function, file in (("imtl_g", imtl_g, "imtl.py"),
                                  ("aligned_mtl", aligned, "aligned.py")):
        for scale in (1e-30, 1e30):
            add(f"{label}-scale-{scale:g}-T3",
                lambda f=function, s=scale: numpy(f(G3 * s)) / s,
                correct(lambda d, f=function: close(d, f(G3))), W + file)
        add(f"{label}-float16", lambda f=function: f(G3.astype("float16")),
            correct(lambda r, f=function: close(r, f(G3), rtol=2e-3,
                                                atol=2e-3)), W + file)
        for bad_name, bad in (("nan", NAN), ("inf", INF)):
            gradients = G3.copy()
            gradients[1, 0] = bad
            add(f"{label}-{bad_name}-gradient",
                lambda f=function, b=gradients: f(b),
                correct(not_finite, also_clear="task_gradients"), W + file)
        add(f"{label}-rank-1", lambda f=function: f([1.0, 2.0]),
            error("task_gradients", "(2,)"), W + file)
        add(f"{label}-no-tasks", lambda f=function: f(np.zeros((0, 3))),
            error("task_gradients", "(0, 3)"), W + file)
        add(f"{label}-strings", lambda f=function: f([["a", "b"]]),
            error("task_gradients", show_value=False), W + file)
    add("imtl_weights-rank-3", lambda: imtl_weights(np.ones((2, 2, 2))),
        error("task_gradients", "(2, 2, 2)"), W + "imtl.py")
    add("aligned_mtl_weights-rank-3",
        lambda: aligned_weights(np.ones((2, 2, 2))),
        error("task_gradients", "(2, 2, 2)"), W + "aligned.py")

    # hyper-parameters
    bad_task_weights = ((NAN, 1.0), (INF, 1.0), (True, 1.0), ("1", 1.0),
                        (), 2.0, True, "ab", (1.0, 2.0, 3.0))
    for name, function in (("aligned_mtl", aligned),
                           ("aligned_mtl_weights", aligned_weights)):
        PROBES.extend(generated(
            name, W + "aligned.py", function, {"task_gradients": G3[:2]},
            {"task_weights": bad_task_weights,
             "scale_mode": ("max", "", None, 1, "MIN")}))
    for name, extra, file in (("IMTLG", {}, "imtl.py"),
                              ("AlignedMTL", {}, "aligned.py")):
        PROBES.extend(generated(
            name, W + file, lambda n=name, **kw: getattr(_weighting(), n)(
                **kw), extra, {"num_tasks": "int_ge1_optional"}))
    PROBES.extend(generated(
        "AlignedMTL", W + "aligned.py",
        lambda **kw: _weighting().AlignedMTL(**kw), {},
        {"task_weights": bad_task_weights[:-1],
         "scale_mode": ("max", "", None, 1, "MIN")}))

    def built(name, tasks=("a", "b"), **kw):
        instance = getattr(_weighting(), name)(**kw)
        instance.set_tasks(list(tasks))
        return instance

    add("AlignedMTL-task_weights-2-for-3-tasks",
        lambda: built("AlignedMTL", tasks=("a", "b", "c"),
                      task_weights=[1.0, 2.0]),
        error("task_weights", "[1.0, 2.0]"), W + "aligned.py")
    for name, file in (("IMTLG", "imtl.py"), ("AlignedMTL", "aligned.py")):
        add(f"{name}.combine_gradients-3-rows-for-2-tasks",
            lambda n=name: built(n).combine_gradients(np.ones((3, 2))),
            error("task_gradients", "(3, 2)"), W + "base.py")
        add(f"{name}-call-T3-zero-gradients",
            lambda n=name: built(n, tasks=("a", "b", "c"))(zeros3),
            correct(lambda d: close(d, np.zeros(4))), W + file)
    add("IMTLG.combine_gradients-update",
        lambda: built("IMTLG").combine_gradients(CONFLICT),
        correct(lambda d: close(d, 2 * numpy(imtl_g(CONFLICT)))),
        W + "imtl.py")
    add("AlignedMTL.combine_gradients-update",
        lambda: built("AlignedMTL", task_weights=[1.0, 0.5])
        .combine_gradients(CONFLICT),
        correct(lambda d: close(d, aligned(CONFLICT, [1.0, 0.5]))),
        W + "aligned.py")


_imtl_aligned_probes()


# ================================================================= layers
L = "mtlbook/layers/"


def _layers():
    import mtlbook.layers as layers

    return layers


def _layer_probes():
    def layer(name):
        return lambda **kw: getattr(_layers(), name)(**kw)

    PROBES.extend(generated("CrossStitch", L + "cross_stitch.py",
                            layer("CrossStitch"), {},
                            {"self_weight": "unit"}))
    PROBES.extend(generated("DenseStack", L + "dense_stack.py",
                            layer("DenseStack"), {},
                            {"units": "units",
                             "activation": ("no_such_activation", 3),
                             "output_activation": ("no_such_activation",)}))
    PROBES.extend(generated("GradientReversal", L + "gradient_reversal.py",
                            layer("GradientReversal"), {},
                            {"lambda_": "float_ge0"}))
    PROBES.extend(generated("dann_lambda", L + "gradient_reversal.py",
                            layer("dann_lambda"), {"progress": 0.5},
                            {"progress": "unit",
                             "gamma": "positive_float",
                             "maximum": "float_ge0"}))
    add("dann_lambda-progress-0", lambda: _layers().dann_lambda(0.0),
        correct(lambda v: v == 0.0), L + "gradient_reversal.py")
    add("dann_lambda-progress-1", lambda: _layers().dann_lambda(1.0),
        correct(lambda v: abs(v - (2 / (1 + math.exp(-10)) - 1)) < 1e-12),
        L + "gradient_reversal.py")

    def schedule(**kw):
        return _layers().DANNSchedule(_layers().GradientReversal(), **kw)

    PROBES.extend(generated("DANNSchedule", L + "gradient_reversal.py",
                            schedule, {"total_steps": 10},
                            {"total_steps": "positive_int",
                             "gamma": "positive_float",
                             "maximum": "float_ge0"}))
    add("DANNSchedule-layer-str",
        lambda: _layers().DANNSchedule("reversal", 10),
        error("layer", value="reversal"), L + "gradient_reversal.py")
    for name in ("MMoE", "OMoE"):
        specs = {"num_tasks": "positive_int", "num_experts": "positive_int",
                 "expert_units": "units",
                 "expert_activation": ("no_such_activation",)}
        if name == "MMoE":
            specs["num_gates"] = (0, 3, True, 2.0, "2", NAN)
        PROBES.extend(generated(name, L + "mmoe.py", layer(name), {},
                                specs))
    for name in ("CGC", "PLE"):
        specs = {"num_tasks": "positive_int",
                 "num_task_experts": "positive_int",
                 "num_shared_experts": "int_ge0",
                 "expert_units": "units",
                 "expert_activation": ("no_such_activation",)}
        if name == "PLE":
            specs["num_levels"] = "positive_int"
        else:
            specs["output_shared"] = "flag"
        PROBES.extend(generated(name, L + "ple.py", layer(name), {}, specs))

    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    add("CrossStitch-one-input",
        lambda: _layers().CrossStitch()([x]),
        error("inputs", ("1", "(5, 3)")), L + "cross_stitch.py")
    add("CrossStitch-different-shapes",
        lambda: _layers().CrossStitch()([x, x[:, :2]]),
        error("inputs", show_value=False), L + "cross_stitch.py")
    add("CrossStitch-self_weight-1-identity",
        lambda: _layers().CrossStitch(1.0)([x, 2 * x]),
        correct(lambda out: close(out[0], x) and close(out[1], 2 * x)),
        L + "cross_stitch.py")
    add("CrossStitch-rows-sum-to-1",
        lambda: _layers().CrossStitch(0.7)([x, x, x]),
        correct(lambda out: all(close(o, x) for o in out)),
        L + "cross_stitch.py")
    add("GradientReversal-forward-identity",
        lambda: _layers().GradientReversal(0.5)(x),
        correct(lambda out: close(out, x)), L + "gradient_reversal.py")
    add("DenseStack-output-shape",
        lambda: _layers().DenseStack((4, 2))(x),
        correct(lambda out: tuple(out.shape) == (5, 2)),
        L + "dense_stack.py")
    for name in ("MMoE", "OMoE"):
        add(f"{name}-gates-on-simplex",
            lambda n=name: getattr(_layers(), n)(num_tasks=3)(
                x, return_gates=True),
            correct(lambda out: len(out[0]) == 3 and all(
                on_simplex(row) for g in out[1] for row in numpy(g))),
            L + "mmoe.py")
        add(f"{name}-rank-3-input",
            lambda n=name: getattr(_layers(), n)()(np.ones((2, 3, 4))),
            error("inputs", show_value=False), L + "mmoe.py")
    add("CGC-wrong-number-of-inputs",
        lambda: _layers().CGC(num_tasks=2)([x, x]),
        error("inputs", "2"), L + "ple.py")
    add("PLE-rank-3-input", lambda: _layers().PLE()(np.ones((2, 3, 4))),
        error("inputs", show_value=False), L + "ple.py")
    add("PLE-gates-on-simplex",
        lambda: _layers().PLE(num_tasks=2)(x, return_gates=True),
        correct(lambda out: len(out[0]) == 2 and all(
            on_simplex(row) for g in out[1] for row in numpy(g))),
        L + "ple.py")
    add("CGC-no-shared-experts",
        lambda: _layers().CGC(num_shared_experts=0)(x, return_gates=True),
        correct(lambda out: all(on_simplex(row) for g in out[1]
                                for row in numpy(g))), L + "ple.py")


_layer_probes()


# ================================================================ metrics
M = "mtlbook/metrics.py"


def _metrics():
    import mtlbook.metrics as metrics

    return metrics


def _metric_probes():
    def delta_m(*args, **kw):
        return _metrics().delta_m(*args, **kw)

    def paired(*args, **kw):
        return _metrics().paired_difference(*args, **kw)

    results = {"digit": 0.95, "size": 0.20}
    baselines = {"digit": 0.90, "size": 0.25}
    add("delta_m-docstring-example",
        lambda: delta_m(results, baselines, lower_is_better={"size"}),
        correct(lambda v: abs(v - 100 * (0.05 / 0.9 + 0.05 / 0.25) / 2)
                < 1e-9), M)
    add("delta_m-negative-baseline",
        lambda: delta_m({"a": -1.0}, {"a": -2.0}),
        correct(lambda v: abs(v - 50.0) < 1e-9), M)
    for name, value in (("results", {}), ("results", [0.9]),
                        ("results", None), ("baselines", {}),
                        ("baselines", 0.9)):
        add(f"delta_m-{name}={value!r}",
            lambda n=name, v=value: delta_m(
                **{"results": results, "baselines": baselines, n: v}),
            error(name, value=value), M)
    for value in (NAN, INF, True, "0.9", None):
        add(f"delta_m-results-value={value!r}",
            lambda v=value: delta_m({"digit": v, "size": 0.2}, baselines),
            error("results", value=value), M)
        add(f"delta_m-baselines-value={value!r}",
            lambda v=value: delta_m(results, {"digit": v, "size": 0.25}),
            error("baselines", value=value), M)
    add("delta_m-baseline-zero",
        lambda: delta_m(results, {"digit": 0.0, "size": 0.25}),
        error("baselines", "0.0"), M)
    add("delta_m-mismatched-tasks",
        lambda: delta_m(results, {"digit": 0.9, "shape": 0.25}),
        error(("results", "baselines"), "shape"), M)
    add("delta_m-lower_is_better-unknown",
        lambda: delta_m(results, baselines, lower_is_better=("sizes",)),
        error("lower_is_better", "sizes"), M)
    add("delta_m-lower_is_better-str",
        lambda: delta_m(results, baselines, lower_is_better="size"),
        correct(lambda v: abs(v - delta_m(results, baselines, {"size"}))
                < 1e-12), M)
    add("delta_m-lower_is_better-None",
        lambda: delta_m(results, baselines, lower_is_better=None),
        error("lower_is_better", "None"), M)

    a, b = [0.80, 0.82, 0.85, 0.81], [0.78, 0.80, 0.80, 0.80]

    def reference(a, b, confidence=0.95):
        from scipy import stats

        d = np.subtract(a, b)
        low, high = stats.t.interval(confidence, len(d) - 1, loc=d.mean(),
                                     scale=stats.sem(d))
        return d.mean(), low, high

    add("paired_difference-scipy-interval", lambda: paired(a, b),
        correct(lambda r: np.allclose(r[:3], reference(a, b))
                and r.n == 4), M)
    add("paired_difference-identical-differences",
        lambda: paired([1.0, 2.0, 3.0], [0.5, 1.5, 2.5]),
        correct(lambda r: np.allclose(r[:3], (0.5, 0.5, 0.5))
                and r.excludes_zero()), M)
    add("PairedDifference-excludes_zero",
        lambda: _metrics().PairedDifference(0.1, -0.1, 0.3, 3)
        .excludes_zero(),
        correct(lambda v: v is False), M)
    PROBES.extend(generated("paired_difference", M, paired,
                            {"a": a, "b": b},
                            {"confidence": "open_unit"}))
    for value in ([], [0.8], [[0.8, 0.8], [0.9, 0.9]], [0.8, NAN],
                  [0.8, INF], "0.8", None, [0.8, "x"]):
        add(f"paired_difference-a={value!r}",
            lambda v=value: paired(v, b[:2]),
            error("a", show_value=False), M)
    add("paired_difference-length-mismatch", lambda: paired(a, b[:3]),
        error(("a", "b"), "3"), M)


_metric_probes()


# ============================================================ distillation
DI = "mtlbook/distillation.py"


def _distillation():
    import mtlbook.distillation as distillation

    return distillation


TEACHER3 = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], "float32")
STUDENT3 = np.array([[0.0, 1.0, 1.0], [1.0, -1.0, 0.0]], "float32")
PROBABILITIES3 = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")


def _kl_by_hand(teacher, student, temperature):
    p = np.exp(teacher / temperature)
    p /= p.sum(axis=1, keepdims=True)
    q = np.exp(student / temperature)
    q /= q.sum(axis=1, keepdims=True)
    return temperature**2 * np.sum(p * np.log(p / q), axis=1).mean()


def _distillation_probes():
    def soft(**kw):
        base = {"teacher_logits": TEACHER3, "student_logits": STUDENT3}
        return _distillation().soft_target_loss(**{**base, **kw})

    def annealed(**kw):
        base = {"labels": np.array([1, 2]),
                "teacher_probabilities": PROBABILITIES3, "step": 1,
                "total_steps": 4}
        return _distillation().annealed_targets(**{**base, **kw})

    def targets(**kw):
        base = {"labels": np.array([2, 0]), "teacher_logits": TEACHER3}
        return _distillation().distillation_targets(**{**base, **kw})

    def loss(**kw):
        return _distillation().DistillationLoss(**kw)

    for temperature in (1.0, 4.0):
        add(f"soft_target_loss-by-hand-T={temperature}",
            lambda t=temperature: soft(temperature=t),
            correct(lambda v, t=temperature: close(
                v, _kl_by_hand(TEACHER3, STUDENT3, t), rtol=1e-5)), DI)
    add("soft_target_loss-equal-logits-zero",
        lambda: soft(student_logits=TEACHER3 + 3.0),
        correct(lambda v: abs(float(numpy(v))) < 1e-6), DI)
    add("soft_target_loss-float16",
        lambda: soft(teacher_logits=TEACHER3.astype("float16"),
                     student_logits=STUDENT3.astype("float16")),
        correct(lambda v: close(v, _kl_by_hand(TEACHER3, STUDENT3, 2.0),
                                rtol=1e-3)), DI)
    add("soft_target_loss-nan-propagates",
        lambda: soft(student_logits=STUDENT3 * NAN),
        correct(not_finite), DI)
    PROBES.extend(generated("soft_target_loss", DI, soft, {},
                            {"temperature": "positive_float"}))
    add("soft_target_loss-teacher_logits-1d",
        lambda: soft(teacher_logits=TEACHER3[0], student_logits=STUDENT3[0]),
        error("teacher_logits", show_value=False), DI)
    add("soft_target_loss-shape-mismatch",
        lambda: soft(student_logits=STUDENT3[:, :2]),
        error(("teacher_logits", "student_logits"), show_value=False), DI)

    add("annealed_targets-by-hand",  # lambda = 1 / 4
        lambda: annealed(),
        correct(lambda v: close(v, [[0.525, 0.4, 0.075],
                                    [0.075, 0.075, 0.85]])), DI)
    add("annealed_targets-endpoints",
        lambda: (annealed(step=0), annealed(step=4)),
        correct(lambda v: close(v[0], PROBABILITIES3)
                and close(v[1], [[0, 1, 0], [0, 0, 1]])), DI)
    PROBES.extend(generated("annealed_targets", DI, annealed, {},
                            {"step": "int_ge0",
                             "total_steps": "positive_int"}))
    add("annealed_targets-step-over-total", lambda: annealed(step=5),
        error("step", "5"), DI)
    for label, name, value in (
            ("out-of-range", "labels", np.array([0, 3])),
            ("float", "labels", np.array([0.0, 1.0])),
            ("empty", "labels", np.array([], "int64")),
            ("rows-not-summing-to-1", "teacher_probabilities", np.ones((2, 3))),
            ("1d", "teacher_probabilities", np.ones(3)),
            ("nan", "teacher_probabilities", PROBABILITIES3 * NAN),
            ("str", "teacher_probabilities", "x")):
        add(f"annealed_targets-{name}-{label}",
            lambda n=name, v=value: annealed(**{n: v}),
            error(name, show_value=False), DI)
    add("annealed_targets-row-mismatch",
        lambda: annealed(labels=np.array([0, 1, 2])),
        error(("labels", "teacher_probabilities"), show_value=False), DI)

    add("distillation_targets-by-hand", lambda: targets(),
        correct(lambda v: close(v, [[0, 0, 1, 1.0, 2.0, 0.5],
                                    [1, 0, 0, 0.0, 0.0, 3.0]])), DI)
    for label, name, value in (
            ("out-of-range", "labels", np.array([0, 5])),
            ("row-mismatch", "labels", np.array([0, 1, 2])),
            ("inf", "teacher_logits", TEACHER3 + INF),
            ("1d", "teacher_logits", TEACHER3[0]),
            ("None", "teacher_logits", None)):
        add(f"distillation_targets-{name}-{label}",
            lambda n=name, v=value: targets(**{n: v}),
            error(name, show_value=False), DI)

    add("DistillationLoss-soft-equals-soft_target_loss",
        lambda: loss(temperature=2.0, label_weight=0.0)(targets(), STUDENT3),
        correct(lambda v: close(v, _kl_by_hand(TEACHER3, STUDENT3, 2.0),
                                rtol=1e-5)), DI)
    add("DistillationLoss-labels-equal-cross-entropy",
        lambda: loss(label_weight=1.0)(targets(), STUDENT3),
        correct(lambda v: close(v, keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                np.array([2, 0]), STUDENT3, from_logits=True)), rtol=1e-5)),
        DI)
    add("DistillationLoss-config-round-trip",
        lambda: _distillation().DistillationLoss.from_config(
            loss(temperature=3.0, label_weight=0.25).get_config()),
        correct(lambda v: (v.temperature, v.label_weight) == (3.0, 0.25)),
        DI)
    PROBES.extend(generated("DistillationLoss", DI, loss, {},
                            {"temperature": "positive_float",
                             "label_weight": "unit"}))


_distillation_probes()


# ================================================================= models
MO = "mtlbook/models.py"


def _models():
    import mtlbook.models as models

    return models


TASKS = {"a": 1, "b": 2}
X4 = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")


def _model_probes():
    def builder(name):
        return lambda **kw: getattr(_models(), name)(**kw)

    bad_tasks = ({}, {"a": 0}, {"a": True}, {"a": 1.5}, {"a": "1"},
                 {1: 2}, [("a", 1)], "a", None, {"a": -1})
    bad_shape = (4, (0,), (-1,), "4", None, (4.5,))
    for name, extra in (("shared_bottom", {}),
                        ("cross_stitch_model", {}),
                        ("mmoe_model", {}), ("ple_model", {})):
        base = {"input_shape": (4,), "tasks": TASKS, **extra}
        specs = {"tasks": bad_tasks, "input_shape": bad_shape,
                 "tower_units": (0, (0,), (-1,), (1.5,), (True,), "8"),
                 "conv_filters": (0, (0,), (-1,), (True,), "16")}
        if name == "shared_bottom":
            specs["bottom_units"] = "units"
        if name == "cross_stitch_model":
            specs["units"] = "units"
            specs["self_weight"] = "unit"
        if name == "mmoe_model":
            specs["num_experts"] = "positive_int"
            specs["expert_units"] = "units"
            specs["num_gates"] = (0, 3, True, 2.0, "1", NAN)
        if name == "ple_model":
            specs["num_levels"] = "positive_int"
            specs["num_task_experts"] = "positive_int"
            specs["num_shared_experts"] = "int_ge0"
            specs["expert_units"] = "units"
        PROBES.extend(generated(name, MO, builder(name), base, specs))
    add("cross_stitch_model-one-task",
        lambda: _models().cross_stitch_model((4,), {"a": 1}),
        error("tasks", "'a'"), MO)
    PROBES.extend(generated(
        "single_task", MO, builder("single_task"),
        {"input_shape": (4,), "task": "a", "units": 2},
        {"task": (1, None, ("a",)), "units": "positive_int",
         "hidden_units": "units"}))
    PROBES.extend(generated("conv_trunk", MO, builder("conv_trunk"), {},
                            {"filters": "units", "name": (1,)}))
    add("shared_bottom-output-shapes",
        lambda: _models().shared_bottom((4,), TASKS)(X4),
        correct(lambda out: tuple(out["a"].shape) == (6, 1)
                and tuple(out["b"].shape) == (6, 2)), MO)

    @functools.lru_cache(maxsize=None)
    def mmoe():
        return _models().mmoe_model((4,), TASKS, num_experts=3)

    add("gate_weights-rows-sum-to-1",
        lambda: _models().gate_weights(mmoe(), X4, batch_size=4),
        correct(lambda gates: len(gates) == 2 and all(
            g.shape == (6, 3) and on_simplex(row) for g in gates
            for row in g)), MO)
    PROBES.extend(generated(
        "gate_weights", MO,
        lambda **kw: _models().gate_weights(mmoe(), **kw), {"x": X4},
        {"batch_size": "positive_int",
         "layer_name": ("no_such_layer", 1, None, "a")}))
    add("gate_weights-empty-x",
        lambda: _models().gate_weights(mmoe(), X4[:0]),
        error("x", "0"), MO)
    add("gate_weights-wrong-features",
        lambda: _models().gate_weights(mmoe(), X4[:, :3]),
        error("x", show_value=False), MO)
    add("gate_weights-model-str",
        lambda: _models().gate_weights("mmoe", X4),
        error("model", value="mmoe"), MO)
    add("reset_optimizer-str", lambda: _models().reset_optimizer("adam"),
        error("optimizer", value="adam"), MO)

    def reset_built():
        optimizer = keras.optimizers.Adam(0.1)
        variable = keras.Variable(np.ones(3, "float32"))
        optimizer.apply_gradients([(np.ones(3, "float32"), variable)])
        _models().reset_optimizer(optimizer)
        return optimizer

    add("reset_optimizer-zeros-state", reset_built,
        correct(lambda o: int(numpy(o.iterations)) == 0 and all(
            np.all(numpy(v) == 0) for v in o.variables
            if "learning_rate" not in v.path)
            and abs(float(numpy(o.learning_rate)) - 0.1) < 1e-7), MO)
    small = functools.partial(_models().shared_bottom, (4,), {"a": 1},
                              (2,), ())
    PROBES.extend(generated(
        "seeded_weights", MO, builder("seeded_weights"),
        {"builders": {"m": small}, "seed": 0},
        {"builders": ({}, {"m": 1}, [small], None),
         "seed": (1.5, "0", None, -1)}))
    add("seeded_weights-repeatable",
        lambda: (_models().seeded_weights({"m": small}, 3),
                 _models().seeded_weights({"m": small}, 3)),
        correct(lambda pair: all(np.array_equal(p, q) for p, q in
                                 zip(pair[0]["m"], pair[1]["m"]))), MO)

    def side(**kw):
        members = {"m": small(name="m"), "n": small(name="n")}
        return _models().SideBySide(**{"members": members, **kw})

    PROBES.extend(generated(
        "SideBySide", MO, lambda **kw: _models().SideBySide(**kw),
        {"members": {"m": small(name="m")}},
        {"members": ({}, {"m": 1}, [small(name="m")], None)}))
    add("SideBySide-members-with-one-name",
        lambda: _models().SideBySide({"m": small(), "n": small()}),
        correct(lambda s: len(s.model.outputs) == 2, also_clear="members"),
        MO)
    add("SideBySide-different-input-shapes",
        lambda: _models().SideBySide(
            {"m": small(), "n": _models().shared_bottom((3,), {"a": 1})}),
        error("members", show_value=False), MO)
    add("SideBySide.restart-wrong-keys",
        lambda: side().restart({"m": small(name="m").get_weights()}),
        error("weights", "'m'"), MO)
    add("SideBySide.targets-missing-task",
        lambda: side().targets({"b": np.zeros(6)}),
        error("y", "'a'"), MO)
    for value in (0, -1, True, 1.5, "2", None):
        add(f"SideBySide.fit-epochs={value!r}",
            lambda v=value: side().fit(X4, {"a": np.zeros(6)}, epochs=v,
                                       batch_size=3, seed=0),
            error("epochs", value=value), MO)
    for value in (0, -1, True, 1.5, "3"):
        add(f"SideBySide.fit-batch_size={value!r}",
            lambda v=value: side().fit(X4, {"a": np.zeros(6)}, epochs=1,
                                       batch_size=v, seed=0),
            error("batch_size", value=value), MO)
    add("SideBySide.fit-labels-length-mismatch",
        lambda: side().fit(X4, {"a": np.zeros(5)}, epochs=1, batch_size=3,
                           seed=0),
        error("y", "5"), MO)


_model_probes()


# =============================================================== training
T = "mtlbook/training.py"


def _training():
    import mtlbook.training as training

    return training


def _network(shared=True):
    inputs = keras.Input((4,), name="x")
    if shared:
        h = keras.layers.Dense(3, name="shared")(inputs)
        outputs = {"a": keras.layers.Dense(1, name="a")(h),
                   "b": keras.layers.Dense(1, name="b")(h)}
    else:
        outputs = {"a": keras.layers.Dense(1, name="a")(inputs),
                   "b": keras.layers.Dense(1, name="b")(inputs)}
    return keras.Model(inputs, outputs)


def _model(strategy=None, compiled=True, **kw):
    model = _training().MultiTaskModel(network=_network(),
                                       strategy=strategy, **kw)
    if compiled:
        model.compile("sgd", loss={"a": "mse", "b": "mse"})
    return model


def _training_probes():
    def mtm(**kw):
        return _training().MultiTaskModel(**kw)

    def add_tf(*args):
        add(*args, tensorflow=True)

    def weighting(name, **kw):
        return getattr(_weighting(), name)(**kw)

    inputs = keras.Input((4,))
    output = keras.layers.Dense(1)(inputs)
    add_tf("MultiTaskModel-outputs-list",
           lambda: mtm(inputs=inputs, outputs=[output]),
           error("outputs", "list"), T)
    add_tf("MultiTaskModel-outputs-empty",
           lambda: mtm(inputs=inputs, outputs={}),
           error("outputs", "dict"), T)
    add_tf("MultiTaskModel-network-list-outputs",
           lambda: mtm(network=keras.Model(inputs, [output])),
           error("network", "list"), T)
    add_tf("MultiTaskModel-strategy-str",
           lambda: mtm(network=_network(), strategy="pcgrad"),
           error("strategy", value="pcgrad"), T)
    add_tf("MultiTaskModel-strategy-class",
           lambda: mtm(network=_network(), strategy=_weighting().PCGrad),
           error("strategy", "PCGrad"), T)
    add_tf("MultiTaskModel-PCGrad-no-shared-variables",
           lambda: mtm(network=_network(shared=False),
                       strategy=weighting("PCGrad")),
           error("strategy", "PCGrad"), T)
    add_tf("MultiTaskModel-shared_layers-unknown",
           lambda: mtm(network=_network(), shared_layers=["nope"]),
           error("shared_layers", "nope"), T)
    add_tf("MultiTaskModel-shared_layers-str",
           lambda: mtm(network=_network(), shared_layers="shared"),
           error("shared_layers", "shared"), T)
    add_tf("MultiTaskModel-log_conflict-str",
           lambda: mtm(network=_network(), log_conflict="False"),
           error("log_conflict", "False"), T)
    add_tf("MultiTaskModel-StaticWeighting-3-weights",
           lambda: mtm(network=_network(),
                       strategy=weighting("StaticWeighting",
                                          weights=[1.0, 1.0, 1.0])),
           error(("weights", "num_tasks", "strategy"), "3"), T)
    add_tf("MultiTaskModel-StaticWeighting-unknown-task",
           lambda: mtm(network=_network(),
                       strategy=weighting("StaticWeighting",
                                          weights={"a": 1.0, "c": 1.0})),
           error("weights", "c"), T)
    add_tf("MultiTaskModel-strategy-built-for-3",
           lambda: mtm(network=_network(),
                       strategy=weighting("EqualWeighting", num_tasks=3)),
           error(("num_tasks", "strategy"), "2"), T)
    add_tf("MultiTaskModel-GradNorm-layer-unknown",
           lambda: mtm(network=_network(),
                       strategy=weighting("GradNorm", layer="nope")),
           error("layer", "nope"), T)
    for name, value in (("loss", {"a": "mse"}),
                        ("loss", {"a": "mse", "b": "mse", "c": "mse"}),
                        ("loss", ["mse", "mse"]), ("loss", "mse"),
                        ("loss", None),
                        ("loss", {"a": "no_such_loss", "b": "mse"}),
                        ("metrics", {"c": ["mae"]}),
                        ("metrics", ["mae"]),
                        ("loss_weights", {"a": 1.0, "b": 2.0})):
        def call(n=name, v=value):
            kwargs = {"loss": {"a": "mse", "b": "mse"}, n: v}
            return _model(compiled=False).compile("sgd", **kwargs)

        add_tf(f"MultiTaskModel.compile-{name}={value!r}", call,
               error(name if name != "loss" or "no_such" not in str(value)
                     else ("loss",), show_value=False), T)
    y = {"a": np.zeros((6, 1), "float32"), "b": np.ones((6, 1), "float32")}

    def task_losses(y, y_pred=None, **kw):
        model = _model()
        return model.compute_task_losses(y, y_pred or model(X4), **kw)

    def losses_and_reference():
        model = _model()
        predictions = model(X4)
        losses = model.compute_task_losses(y, predictions)
        expected = [np.mean(numpy(predictions["a"]) ** 2),
                    np.mean((numpy(predictions["b"]) - 1) ** 2)]
        return numpy(losses), np.array(expected)

    add_tf("compute_task_losses-values", losses_and_reference,
           correct(lambda pair: close(*pair)), T)
    add_tf("compute_task_losses-missing-task",
           lambda: task_losses({"a": y["a"]}),
           error("y", "b"), T)
    add_tf("compute_task_losses-unknown-task",
           lambda: task_losses({**y, "c": y["a"]}),
           error("y", "c"), T)
    add_tf("compute_task_losses-array",
           lambda: task_losses(y["a"]), error("y", show_value=False), T)
    add_tf("compute_task_losses-sample_weight-unknown-task",
           lambda: task_losses(y, sample_weight={"c": np.ones(6)}),
           error("sample_weight", "c"), T)
    add_tf("compute_loss-before-compile",
           lambda: _model(compiled=False).compute_loss(
               X4, y, _model(compiled=False)(X4)),
           error("compile", show_value=False), T)

    def fit(model, x, y, **kw):
        model.fit(x, y, epochs=1, batch_size=6, verbose=0, **kw)
        return model

    add_tf("MultiTaskModel.fit-missing-task",
           lambda: fit(_model(), X4, {"a": y["a"]}), error("y", "b"), T)
    add_tf("MultiTaskModel.fit-PCGrad-missing-task",
           lambda: fit(_model(weighting("PCGrad")), X4, {"a": y["a"]}),
           error("y", "b"), T)
    add_tf("MultiTaskModel.fit-unknown-task",
           lambda: fit(_model(), X4, {**y, "c": y["a"]}), error("y", "c"),
           T)
    add_tf("MultiTaskModel.fit-MGDA-one-step",
           lambda: fit(_model(weighting("MGDA")), X4, y),
           correct(lambda m: all(finite(v) for v in m.trainable_variables)),
           T)
    add_tf("GradientConflictHistory-without-log_conflict",
           lambda: fit(_model(), X4, y, callbacks=[
               _training().GradientConflictHistory()]),
           error("log_conflict", "False"), T)

    def weight_history():
        recorder = _training().TaskWeightHistory()
        fit(_model(weighting("StaticWeighting", weights=[1.0, 3.0])), X4,
            y, callbacks=[recorder])
        return recorder.weights

    add_tf("TaskWeightHistory-records-weights", weight_history,
           correct(lambda w: len(w) == 1 and close(w[0], [1.0, 3.0])), T)
    def plain_model():
        network = _network()
        network.compile("sgd", loss={"a": "mse", "b": "mse"})
        return network

    add_tf("TaskWeightHistory-plain-model",
           lambda: fit(plain_model(), X4, y, callbacks=[
               _training().TaskWeightHistory()]),
           error("model", show_value=False), T)

    def cosine(matrix):
        return _training().mean_pairwise_cosine(matrix)

    def reference_cosine(matrix):
        matrix = np.asarray(matrix, "float64")
        unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        cos = unit @ unit.T
        return cos[np.triu_indices(len(matrix), 1)].mean()

    add_tf("mean_pairwise_cosine-T3", lambda: cosine(G3),
           correct(lambda c: close(c, reference_cosine(G3))), T)
    add_tf("mean_pairwise_cosine-T1", lambda: cosine([[1.0, 2.0]]),
           error("task_gradients", show_value=False), T)
    add_tf("mean_pairwise_cosine-rank-1", lambda: cosine([1.0, 2.0]),
           error("task_gradients", show_value=False), T)
    for scale in (1e-30, 1e30):
        add_tf(f"mean_pairwise_cosine-scale-{scale:g}",
               lambda s=scale: cosine(G3 * s),
               correct(lambda c: close(c, reference_cosine(G3))), T)
    add_tf("mean_pairwise_cosine-float16",
           lambda: cosine(G3.astype("float16")),
           correct(lambda c: close(c, reference_cosine(G3), rtol=3e-3,
                                   atol=3e-3)), T)
    add_tf("cross_replica_sum-identity",
           lambda: _training().cross_replica_sum(keras.ops.ones((2,))),
           correct(lambda v: close(v, [1.0, 1.0])), T)

    def gradient_matrix(variables=None):
        import tensorflow as tf

        variable = tf.Variable([1.0, 2.0])
        with tf.GradientTape(persistent=True) as tape:
            losses = [tf.reduce_sum(variable ** 2), 3.0 * variable[0]]
        return _training().task_gradient_matrix(
            tape, losses, [variable] if variables is None else variables)

    add_tf("task_gradient_matrix-values", gradient_matrix,
           correct(lambda m: close(m, [[2.0, 4.0], [3.0, 0.0]])), T)
    add_tf("task_gradient_matrix-no-variables",
           lambda: gradient_matrix(variables=[]),
           error("variables", "[]"), T)
    add_tf("task_gradient_matrix-variables-None",
           lambda: gradient_matrix(variables=()),
           error("variables", "()"), T)


_training_probes()


# ============================================================= adaptation
A = "mtlbook/adaptation.py"


def _adaptation():
    import mtlbook.adaptation as adaptation

    return adaptation


def _features():
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])


@functools.lru_cache(maxsize=None)
def _trainer():
    adaptation = _adaptation()
    model = adaptation.domain_adversarial_model(_features(), 2)
    return adaptation.DomainAdversarialTrainer(
        model, keras.optimizers.SGD(0.01))


MOON_X = np.random.default_rng(2).normal(size=(8, 2)).astype("float32")
MOON_Y = (MOON_X[:, 0] > 0).astype("int32")


def _adaptation_probes():
    def model(**kw):
        return _adaptation().domain_adversarial_model(
            **{"feature_extractor": _features(), "num_classes": 2, **kw})

    PROBES.extend(generated(
        "domain_adversarial_model", A, model, {},
        {"num_classes": (1, 0, True, 2.5, "2", NAN, None),
         "domain_units": ((0,), (-1,), (True,), (1.5,), "32", None, 32),
         "lambda_": "float_ge0",
         "feature_extractor": (keras.layers.Dense(2), "features", None)},
        tensorflow=True))
    add("domain_adversarial_model-image-features",
        lambda: model(feature_extractor=keras.Sequential(
            [keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3)])),
        error("feature_extractor", show_value=False), A, tensorflow=True)

    def trainer(**kw):
        base = {"model": model(), "optimizer": keras.optimizers.SGD(0.1)}
        return _adaptation().DomainAdversarialTrainer(**{**base, **kw})

    PROBES.extend(generated(
        "DomainAdversarialTrainer", A, trainer, {},
        {"domain_weight": "float_ge0",
         "optimizer": ("sgd", None, keras.optimizers.SGD),
         "model": ("dann", None)}, tensorflow=True))
    add("DomainAdversarialTrainer-model-without-reversal",
        lambda: trainer(model=_network()),
        error("model", "0"), A, tensorflow=True)

    def fit(**kw):
        base = {"source_x": MOON_X, "source_y": MOON_Y, "target_x": MOON_X,
                "steps": 1}
        return _trainer().fit(**{**base, **kw})

    PROBES.extend(generated(
        "DomainAdversarialTrainer.fit", A, fit, {},
        {"steps": "positive_int", "lambda_max": "float_ge0",
         "gamma": "positive_float",
         "batch_size": "int_ge1_optional", "log_every": "positive_int",
         "seed": (1.5, "0", -1)}, tensorflow=True))
    add("DomainAdversarialTrainer.fit-one-step",
        lambda: fit(steps=2, log_every=1),
        correct(lambda h: h["step"] == [0, 1] and all(
            math.isfinite(v) for v in h["label_loss"])), A, tensorflow=True)
    add("DomainAdversarialTrainer.fit-labels-length-mismatch",
        lambda: fit(source_y=MOON_Y[:5]),
        error(("source_x", "source_y"), "5"), A, tensorflow=True)
    add("DomainAdversarialTrainer.fit-empty-target",
        lambda: fit(target_x=MOON_X[:0]),
        error("target_x", "0"), A, tensorflow=True)
    add("DomainAdversarialTrainer.fit-empty-source",
        lambda: fit(source_x=MOON_X[:0], source_y=MOON_Y[:0]),
        error("source_x", "0"), A, tensorflow=True)
    add("DomainAdversarialTrainer.fit-wrong-features",
        lambda: fit(source_x=np.ones((8, 3), "float32")),
        error("source_x", show_value=False), A, tensorflow=True)
    add("DomainAdversarialTrainer.fit-label-out-of-range",
        lambda: fit(source_y=np.full(8, 5, "int32")),
        error("source_y", "5"), A, tensorflow=True)
    PROBES.extend(generated(
        "DomainAdversarialTrainer.train_step", A,
        lambda **kw: _trainer().train_step(
            MOON_X, MOON_Y, MOON_X, **kw), {},
        {"lambda_": "float_ge0"}, tensorflow=True))
    add("DomainAdversarialTrainer.reset-wrong-weights",
        lambda: _trainer().reset([np.zeros(2)]),
        error("weights", show_value=False), A, tensorflow=True)


_adaptation_probes()


# =================================================================== data
D = "mtlbook/data/"


def _data(name):
    import mtlbook.data as data

    return getattr(data, name)


def _data_probes():
    def function(name):
        return lambda **kw: _data(name)(**kw)

    bad_tasks = ((), "nope", ("digit", "nope"), None, ("digit", 1))
    PROBES.extend(generated(
        "load_digits", D + "digits.py", function("load_digits"), {},
        {"tasks": bad_tasks, "image_size": "positive_int",
         "validation_fraction": "half_open_unit",
         "test_fraction": "open_unit", "flatten": "flag",
         "seed": "seed"}))
    add("load_digits-fractions-sum-1",
        lambda: _data("load_digits")(validation_fraction=0.5,
                                     test_fraction=0.5),
        error(("test_fraction", "validation_fraction"), "0.5"),
        D + "digits.py")
    add("load_digits-labels",
        lambda: _data("load_digits")(tasks=("digit", "parity", "large")),
        correct(lambda d: all(
            np.array_equal(s.y["parity"], s.y["digit"] % 2)
            and np.array_equal(s.y["large"], s.y["digit"] >= 5)
            and s.x.min() >= 0 and s.x.max() <= 1 for s in d.values())
            and len(d["train"].x) + len(d["test"].x) == 1797),
        D + "digits.py")
    PROBES.extend(generated(
        "resize_images", D + "digits.py", function("resize_images"),
        {"images": np.ones((2, 8, 8)), "size": 8},
        {"size": "positive_int",
         "images": (np.ones((8, 8)), "x", None)}))
    add("resize_images-constant",
        lambda: _data("resize_images")(np.full((2, 8, 8), 0.3), 13),
        correct(lambda r: r.shape == (2, 13, 13) and close(r, np.full(
            (2, 13, 13), 0.3))), D + "digits.py")
    add("resize_images-same-size",
        lambda: _data("resize_images")(np.arange(128.0).reshape(2, 8, 8),
                                       8),
        correct(lambda r: close(r, np.arange(128.0).reshape(2, 8, 8))),
        D + "digits.py")
    labels = np.repeat(np.arange(3), 10)
    PROBES.extend(generated(
        "split_indices", D + "digits.py", function("split_indices"),
        {"labels": labels, "fractions": {"a": 0.5, "b": 0.5}},
        {"fractions": ({"a": 0.5, "b": 0.6}, {"a": NAN, "b": 1.0},
                       {"a": -0.5, "b": 1.5}, {}, [0.5, 0.5], None,
                       {"a": True}, {"a": "1"}),
         "labels": (np.array([]), None, np.ones((3, 10))),
         "seed": "seed"}))
    add("split_indices-cover",
        lambda: _data("split_indices")(labels, {"a": 0.3, "b": 0.7}),
        correct(lambda parts: np.array_equal(np.sort(np.concatenate(
            list(parts.values()))), np.arange(30))
            and len(parts["a"]) == 9), D + "digits.py")
    add("DIGIT_TASKS-parity",
        lambda: _data("DIGIT_TASKS")["parity"](np.arange(10)),
        correct(lambda p: list(p) == [0, 1] * 5), D + "digits.py")
    add("Split-fields", lambda: _data("Split")(1, 2),
        correct(lambda s: s.x == 1 and s.y == 2), D + "digits.py")

    x = np.arange(12, dtype="float32").reshape(6, 2)
    y = {"a": np.arange(6), "b": np.arange(6) % 2}

    def dataset(**kw):
        return _data("to_dataset")(**{"x": x, "y": y, **kw})

    PROBES.extend(generated(
        "to_dataset", D + "pipelines.py", dataset, {},
        {"batch_size": "positive_int", "seed": (1.5, "0"),
         "shuffle": "flag", "cache": "flag", "repeat": "flag",
         "y": ({"a": np.arange(5)}, np.arange(5), [np.arange(6)],
               {1: np.arange(6)}, {})}, tensorflow=True))
    add("to_dataset-x-empty", lambda: dataset(x=x[:0], y=None),
        error("x", "0"), D + "pipelines.py", tensorflow=True)
    add("to_dataset-round-trip",
        lambda: list(dataset(batch_size=4).as_numpy_iterator()),
        correct(lambda batches: np.array_equal(
            np.concatenate([b[0] for b in batches]), x)
            and np.array_equal(np.concatenate([b[1]["b"] for b in batches]),
                               y["b"])), D + "pipelines.py",
        tensorflow=True)

    small = {"n_train": 4, "n_validation": 0, "n_test": 4}
    counts = {"n_train": "positive_int", "n_validation": "int_ge0",
              "n_test": "positive_int"}
    PROBES.extend(generated(
        "make_multidigits", D + "multidigits.py",
        function("make_multidigits"),
        {**small, "image_size": 12, "digit_size": 8},
        {**counts, "image_size": (1, 0, True, 12.5, "12", None),
         "digit_size": (0, 12, 13, True, 8.5, "8", None),
         "seed": "seed"}))
    PROBES.extend(generated(
        "make_shapes", D + "shapes.py", function("make_shapes"),
        {**small, "image_size": 16},
        {**counts, "image_size": (15, 0, True, 16.5, "16", None),
         "seed": "seed"}))
    PROBES.extend(generated(
        "make_mmoe_synthetic", D + "mmoe_synthetic.py",
        function("make_mmoe_synthetic"), {**small, "num_features": 4},
        {**counts, "correlation": (1.1, -1.1, NAN, INF, True, "0.5",
                                   None),
         "num_features": (1, 0, True, 4.5, "4", None),
         "seed": "seed", "shared_waves": ("False", None, 1),
         "waves": ("nope", None, 1)}))
    add("make_mmoe_synthetic-correlation",
        lambda: _data("make_mmoe_synthetic")(
            n_train=4, n_validation=0, n_test=4, correlation=0.5),
        correct(lambda d: set(d) == {"train", "test"} and all(
            finite(s.x) and finite(s.y["task_a"]) for s in d.values())),
        D + "mmoe_synthetic.py")
    PROBES.extend(generated(
        "make_digits_m", D + "digits_m.py", function("make_digits_m"),
        {"image_size": 8},
        {"tasks": bad_tasks, "image_size": "positive_int",
         "validation_fraction": "half_open_unit",
         "test_fraction": "open_unit", "seed": "seed"}))
    PROBES.extend(generated(
        "make_shifted_moons", D + "moons.py",
        function("make_shifted_moons"), {"n_per_domain": 8},
        {"n_per_domain": (3, 0, True, 8.5, "8", None),
         "angle_degrees": "finite_float", "noise": "float_ge0",
         "test_fraction": "open_unit", "seed": (-1, 1.5, "0", True)}))
    add("make_shifted_moons-angle-0-same-distribution",
        lambda: _data("make_shifted_moons")(n_per_domain=40,
                                            angle_degrees=0.0, noise=0.0),
        correct(lambda d: finite(d["target_train"][0])
                if isinstance(d, dict) and "target_train" in d
                else d is not None), D + "moons.py")

    # online loaders: arguments that fail before any download
    def mnist(**kw):
        return _data("load_mnist")(**kw)

    def fashion(**kw):
        return _data("load_fashion_mnist")(**kw)

    for value in bad_tasks:
        add(f"load_mnist-tasks={value!r}", lambda v=value: mnist(tasks=v),
            error("tasks", show_value=False), D + "online.py")
        add(f"load_fashion_mnist-tasks={value!r}",
            lambda v=value: fashion(tasks=v),
            error("tasks", show_value=False), D + "online.py")
    add("load_mnist-path-missing",
        lambda: mnist(path="/nonexistent/mnist.npz"),
        error("path", "/nonexistent/mnist.npz"), D + "online.py")
    add("load_mnist-path-int", lambda: mnist(path=3),
        error("path", "3"), D + "online.py")
    add("load_fashion_mnist-directory-missing",
        lambda: fashion(directory="/nonexistent"),
        error("directory", "/nonexistent"), D + "online.py")
    for value in BAD["half_open_unit"]:
        add(f"load_mnist-validation_fraction={value!r}",
            lambda v=value: mnist(path=_fake_mnist(),
                                  validation_fraction=v),
            error("validation_fraction", value=value), D + "online.py")
        add(f"load_fashion_mnist-validation_fraction={value!r}",
            lambda v=value: fashion(validation_fraction=v),
            error("validation_fraction", value=value), D + "online.py")
    for value in BAD["seed"]:
        add(f"load_mnist-seed={value!r}",
            lambda v=value: mnist(path=_fake_mnist(), seed=v,
                                  validation_fraction=0.5),
            error("seed", value=value), D + "online.py")
    add("load_mnist-fake-file",
        lambda: mnist(path=_fake_mnist(), validation_fraction=0.5),
        correct(lambda d: set(d) == {"train", "validation", "test"}
                and d["train"].x.shape[1:] == (28, 28, 1)
                and d["train"].x.max() <= 1.0), D + "online.py")


@functools.lru_cache(maxsize=None)
def _fake_mnist():
    """A small local `mnist.npz` (no download)."""
    directory = tempfile.mkdtemp(dir=SCRATCH.name)
    path = os.path.join(directory, "mnist.npz")
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (40, 28, 28), "uint8"),
             y_train=np.arange(40) % 10,
             x_test=rng.integers(0, 256, (10, 28, 28), "uint8"),
             y_test=np.arange(10))
    return path


_data_probes()


# =============================================================== transfer
TR = "mtlbook/transfer/"


def _transfer():
    import mtlbook.transfer as transfer

    return transfer


@functools.lru_cache(maxsize=None)
def _small_cnn():
    return _transfer().small_cnn((8, 8, 1), 3, width=2)


def _transfer_probes():
    def function(name):
        return lambda **kw: getattr(_transfer(), name)(**kw)

    add("BACKBONES-names", lambda: sorted(_transfer().BACKBONES),
        correct(lambda names: "mobilenet_v2" in names), TR + "backbones.py")
    PROBES.extend(generated(
        "backbone", TR + "backbones.py", function("backbone"),
        {"name": "mobilenet_v3_small", "input_shape": (32, 32, 3)},
        {"name": ("resnet", None, 1),
         "weights": (3, "weights.h5", "/nonexistent/x.weights.h5",
                     "imagenet21k"),
         "input_shape": ((32, 32), "32", None, (0, 32, 3)),
         "pooling": ("mean", 1),
         "include_top": ("False",)}))
    PROBES.extend(generated(
        "preprocessing_layer", TR + "backbones.py",
        function("preprocessing_layer"), {},
        {"name": ("resnet", None, 1)}))
    for name in ("freeze", "trainable_summary"):
        add(f"{name}-model-str",
            lambda n=name: getattr(_transfer(), n)("model"),
            error("model", "str"), TR + "freezing.py")
    add("is_batchnorm-str", lambda: _transfer().is_batchnorm("bn"),
        correct(lambda v: v is False, also_clear="layer"),
        TR + "freezing.py")

    def unfreeze(**kw):
        return _transfer().unfreeze(_small_cnn(), **kw)

    PROBES.extend(generated(
        "unfreeze", TR + "freezing.py", unfreeze, {},
        {"from_layer": (1.5, 0.0, -0.5, NAN, INF, "nope", 100, -100, True,
                        None),
         "train_batchnorm": "flag"}))
    add("unfreeze-model-without-layers",
        lambda: _transfer().unfreeze(keras.layers.Dense(2)),
        error("model", show_value=False), TR + "freezing.py")
    add("unfreeze-keeps-batchnorm-frozen",
        lambda: _transfer().trainable_summary(
            _transfer().unfreeze(_small_cnn(), from_layer=0)),
        correct(lambda s: s["batchnorm_trainable"] == 0
                and s["batchnorm_frozen"] == 3), TR + "freezing.py")
    add("freeze-then-summary",
        lambda: _transfer().trainable_summary(
            _transfer().freeze(_small_cnn())),
        correct(lambda s: s["trainable"] == 0 and s["frozen"] > 0),
        TR + "freezing.py")

    add("multiplier_for-longest-prefix",
        lambda: (_transfer().multiplier_for("a/b/kernel",
                                            {"a": 0.1, "a/b": 0.5}),
                 _transfer().multiplier_for("ab/kernel", {"a": 0.1})),
        correct(lambda v: v == (0.5, 1.0)), TR + "learning_rates.py")
    PROBES.extend(generated(
        "multiplier_for", TR + "learning_rates.py",
        function("multiplier_for"),
        {"path": "a/kernel", "multipliers": {"a": 0.5}},
        {"path": (None, 3), "multipliers": ([("a", 0.5)], None,
                                            {"a": NAN}, {"a": -1.0})}))
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    PROBES.extend(generated(
        "discriminative_multipliers", TR + "learning_rates.py",
        function("discriminative_multipliers"), {"groups": [dense]},
        {"decay": "positive_float",
         "groups": ([], None, [1], "dense", dense)}))
    add("discriminative_multipliers-factors",
        lambda: _transfer().discriminative_multipliers(
            [dense, [dense]], decay=2.0),
        correct(lambda m: set(m.values()) == {1.0}), TR + "learning_rates.py")
    for name in ("DiscriminativeAdam", "DiscriminativeAdamW",
                 "DiscriminativeSGD"):
        PROBES.extend(generated(
            name, TR + "learning_rates.py", function(name),
            {"learning_rate": 0.01},
            {"multipliers": ({"a": -1.0}, {"a": NAN}, {"a": INF},
                             {"a": True}, {"a": "1"}, {1: 0.5},
                             [("a", 0.5)], "a")}))

    def mixin_optimizer(**kw):
        class RMSpropGroups(_transfer().LearningRateMultipliers,
                            keras.optimizers.RMSprop):
            pass

        return RMSpropGroups(**{"learning_rate": 0.01, **kw})

    PROBES.extend(generated(
        "LearningRateMultipliers", TR + "learning_rates.py",
        mixin_optimizer, {},
        {"multipliers": ({"a": -1.0}, {"a": NAN}, {"a": True}, "a")}))
    add("LearningRateMultipliers.variable_multiplier-unknown-variable",
        lambda: mixin_optimizer().variable_multiplier(
            keras.Variable(1.0, name="probe_unknown")),
        error("variable", "probe_unknown"), TR + "learning_rates.py")

    def discriminative_step():
        variable = keras.Variable(np.ones(2, "float32"), name="probe_w")
        other = keras.Variable(np.ones(2, "float32"), name="probe_v")
        optimizer = _transfer().DiscriminativeSGD(
            0.1, multipliers={variable.path: 0.5})
        optimizer.apply_gradients([(np.ones(2, "float32"), variable),
                                   (np.ones(2, "float32"), other)])
        return numpy(variable), numpy(other)

    add("DiscriminativeSGD-step", discriminative_step,
        correct(lambda pair: close(pair[0], [0.95, 0.95])
                and close(pair[1], [0.9, 0.9])), TR + "learning_rates.py")
    PROBES.extend(generated(
        "SlantedTriangular", TR + "learning_rates.py",
        function("SlantedTriangular"),
        {"max_learning_rate": 1e-3, "total_steps": 100},
        {"max_learning_rate": "positive_float",
         "total_steps": (1, 0, True, 10.5, "10", None),
         "cut_fraction": "open_unit",
         "ratio": (0.5, 0.0, NAN, INF, True, "32", None)}))
    add("SlantedTriangular-shape",
        lambda: [float(numpy(_transfer().SlantedTriangular(
            1.0, 100, 0.1, 10.0)(step))) for step in (0, 10, 100, 200)],
        correct(lambda r: np.allclose(r, [0.1, 1.0, 0.1, 0.1])),
        TR + "learning_rates.py")

    add("cache_directory-given", lambda: _transfer().cache_directory("x"),
        correct(lambda d: d == "x"), TR + "pretrained.py")
    add("cache_directory-int", lambda: _transfer().cache_directory(3),
        error("cache_dir", "3"), TR + "pretrained.py")
    images = np.full((2, 4, 4, 1), 0.9, "float32")
    PROBES.extend(generated(
        "scatter_on_canvas", TR + "pretrained.py",
        function("scatter_on_canvas"),
        {"images": images, "canvas_size": 6},
        {"canvas_size": (3, 0, True, 6.5, "6", None),
         "noise": "unit", "seed": "seed",
         "images": (np.ones((2, 4, 4)), np.ones((2, 4, 5, 1)), None)}))
    add("scatter_on_canvas-values",
        lambda: _transfer().scatter_on_canvas(images, 6, noise=0.3),
        correct(lambda c: c.shape == (2, 6, 6, 1) and c.min() >= 0
                and c.max() <= 1 and all(
                    np.isclose(c[i], 0.9).sum() == 16 for i in range(2))),
        TR + "pretrained.py")
    PROBES.extend(generated(
        "transfer_digits", TR + "pretrained.py",
        function("transfer_digits"), {},
        {"digit_size": (0, -1, True, 8.5, "8", None),
         "canvas_size": (8, 0, True, 16.5, "16"),
         "noise": "unit", "source_copies": "positive_int",
         "seed": "seed"}))
    add("transfer_digits-labels",
        lambda: _transfer().transfer_digits(digit_size=8),
        correct(lambda d: all(set(np.unique(d[k][1])) == set(range(5))
                              for k in d)), TR + "pretrained.py")
    PROBES.extend(generated(
        "small_cnn", TR + "pretrained.py", function("small_cnn"),
        {"input_shape": (8, 8, 1), "num_classes": 3, "width": 2},
        {"input_shape": ((8, 8), 8, "8", None, (0, 8, 1)),
         "num_classes": "positive_int", "width": "positive_int"}))
    PROBES.extend(generated(
        "compile_classifier", TR + "pretrained.py",
        lambda **kw: _transfer().compile_classifier(
            **{"model": _transfer().small_cnn((8, 8, 1), 3, 2), **kw}),
        {}, {"learning_rate": "positive_float",
             "model": ("cnn", None),
             "optimizer": (3, keras.optimizers.Adam)}))
    cache = tempfile.mkdtemp(dir=SCRATCH.name)
    PROBES.extend(generated(
        "pretrained_digits_cnn", TR + "pretrained.py",
        function("pretrained_digits_cnn"),
        {"cache_dir": cache, "epochs": 1, "source_copies": 1,
         "digit_size": 8, "canvas_size": 10, "width": 2},
        {"epochs": "positive_int", "width": "positive_int",
         "batch_size": "positive_int",
         "digit_size": (0, True, 8.5, "8"),
         "canvas_size": (4, True, 10.5),
         "noise": (-0.1, NAN, "0.3"),
         "source_copies": (0, True, 1.5),
         "seed": "seed", "overwrite": "flag"}))

    def unfreezing(**kw):
        return _transfer().GradualUnfreezing(
            **{"groups": [_small_cnn().layers[1]], **kw})

    PROBES.extend(generated(
        "GradualUnfreezing", TR + "unfreezing.py", unfreezing, {},
        {"groups": ([], None, [1], "conv", keras.layers.Dense(2)),
         "epochs_per_group": "positive_int",
         "train_batchnorm": "flag"}))


_transfer_probes()


# ============================================= parameter-efficient tuning
def _peft_mlp():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, activation="relu", name="d1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))


def _peft_probes():
    PROBES.extend(generated(
        "Adapter", L + "adapter.py",
        lambda **kw: _layers().Adapter(**kw), {"bottleneck": 2},
        {"bottleneck": "positive_int",
         "activation": ("no_such_activation", 3)}))
    add("Adapter-identity-at-start",
        lambda: numpy(_layers().Adapter(2)(np.ones((2, 3), "float32"))),
        correct(lambda y: np.array_equal(y, np.ones((2, 3)))),
        L + "adapter.py")
    add("Adapter-unknown-last-axis",
        lambda: _layers().Adapter(2).build((None, None)),
        error("input_shape", show_value=False), L + "adapter.py")

    def enable(**kw):
        return _transfer().enable_lora(**{"model": _peft_mlp(), **kw})

    PROBES.extend(generated(
        "enable_lora", TR + "lora.py", enable, {"rank": 2},
        {"rank": "positive_int",
         "layers": ("d1", (), [], ["nope"], [3])}))
    add("enable_lora-model-str",
        lambda: _transfer().enable_lora("model", 2),
        error("model", "str"), TR + "lora.py")
    add("enable_lora-layer-without-lora",
        lambda: _transfer().enable_lora(
            keras.Sequential([keras.Input((3,)),
                              keras.layers.LayerNormalization(name="ln")]),
            2, layers=["ln"]),
        error("layers", "'ln'"), TR + "lora.py")
    add("enable_lora-twice",
        lambda: _transfer().enable_lora(
            _transfer().enable_lora(_peft_mlp(), 2), 2, layers=["d1"]),
        error("layers", "'d1'"), TR + "lora.py")
    add("enable_lora-starts-unchanged",
        lambda: (lambda m, before: np.array_equal(
            before, numpy(_transfer().enable_lora(m, 2)(np.ones((2, 6))))))(
                *(lambda m: (m, numpy(m(np.ones((2, 6))))))(_peft_mlp())),
        correct(lambda same: same is True), TR + "lora.py")
    add("lora_parameter_count-by-hand",
        lambda: _transfer().lora_parameter_count(
            _transfer().enable_lora(_peft_mlp(), 2)),
        correct(lambda n: n == 2 * (6 + 4) + 2 * (4 + 3)), TR + "lora.py")
    add("lora_parameter_count-model-str",
        lambda: _transfer().lora_parameter_count("model"),
        error("model", "str"), TR + "lora.py")
    add("lora_state-without-lora",
        lambda: _transfer().lora_state(_peft_mlp()),
        error("model", show_value=False), TR + "lora.py")
    add("lora_state-keys",
        lambda: sorted(_transfer().lora_state(
            _transfer().enable_lora(_peft_mlp(), 1))),
        correct(lambda keys: keys == ["d1/lora_kernel_a", "d1/lora_kernel_b",
                                      "head/lora_kernel_a",
                                      "head/lora_kernel_b"]),
        TR + "lora.py")

    def load(state):
        model = _transfer().enable_lora(_peft_mlp(), 1)
        return _transfer().load_lora_state(model, state(model))

    add("load_lora_state-state-list", lambda: load(lambda m: [1]),
        error("state", "list"), TR + "lora.py")
    add("load_lora_state-missing-key",
        lambda: load(lambda m: {"d1/lora_kernel_a": np.zeros((6, 1))}),
        error("state", show_value=False), TR + "lora.py")
    add("load_lora_state-wrong-shape",
        lambda: load(lambda m: {**_transfer().lora_state(m),
                                "d1/lora_kernel_a": np.zeros((6, 2))}),
        error("state", "(6, 2)"), TR + "lora.py")
    add("merge_lora-model-layer",
        lambda: _transfer().merge_lora(keras.layers.Dense(2)),
        error("model", "Dense"), TR + "lora.py")

    def merged_gap():
        model = _transfer().enable_lora(_peft_mlp(), 2)
        for layer in model.layers[1:]:
            layer.lora_kernel_b.assign(
                np.ones(tuple(layer.lora_kernel_b.shape)) * 0.3)
        x = np.linspace(-1, 1, 12).reshape(2, 6).astype("float32")
        merged = _transfer().merge_lora(model)
        return float(np.abs(numpy(merged(x)) - numpy(model(x))).max())

    add("merge_lora-same-outputs", merged_gap,
        correct(lambda gap: gap < 1e-5), TR + "lora.py")
    add("takes_lora-str", lambda: _transfer().takes_lora("dense"),
        correct(lambda v: v is False), TR + "lora.py")
    add("takes_lora-dense", lambda: _transfer().takes_lora(
        keras.layers.Dense(2)), correct(lambda v: v is True), TR + "lora.py")

    def bitfit(**kw):
        return _transfer().bitfit(**{"model": _peft_mlp(), **kw})

    PROBES.extend(generated(
        "bitfit", TR + "freezing.py", bitfit, {},
        {"heads": ("head", 3, None, ["nope"], [3])}))
    add("bitfit-model-str", lambda: _transfer().bitfit("model"),
        error("model", "str"), TR + "freezing.py")
    add("bitfit-trains-biases-and-heads",
        lambda: [w.path for w in bitfit(heads=["head"]).trainable_weights],
        correct(lambda paths: paths == ["d1/bias", "head/kernel",
                                        "head/bias"]), TR + "freezing.py")
    add("is_bias-layer-str", lambda: _transfer().is_bias("dense", None),
        error("layer", "str"), TR + "freezing.py")
    add("is_bias-variable-int",
        lambda: _transfer().is_bias(keras.layers.Dense(2), 3),
        error("variable", "int"), TR + "freezing.py")


_peft_probes()


# ========================================================= plot, results
P = "mtlbook/plot.py"
R = "mtlbook/results.py"


def _plot():
    import mtlbook.plot as plot

    return plot


def _results():
    import mtlbook.results as results

    return results


def _plot_probes():
    def function(name):
        return lambda **kw: getattr(_plot(), name)(**kw)

    history = {"a_loss": [1.0, 0.5], "val_a_loss": [1.1, 0.6]}
    PROBES.extend(generated(
        "plot_history", P, function("plot_history"),
        {"history": history, "tasks": ["a"]},
        {"history": ({}, None, [1.0], "history"),
         "tasks": ("a", [], None, ["b"])}))
    for value in ("accuracy", None, 1):
        add(f"plot_history-metric={value!r}",
            lambda v=value: _plot().plot_history(history, ["a"], metric=v),
            error(("metric", "tasks"), value=value), P)
    images = np.zeros((3, 4, 4))
    PROBES.extend(generated(
        "image_grid", P, function("image_grid"), {"images": images},
        {"images": (np.zeros((0, 4, 4)), np.zeros((4, 4)),
                    np.zeros((3, 4, 4, 2)), None),
         "labels": (["a"], []),
         "columns": "positive_int",
         "cmap": ("no_such_cmap", 1)}))
    curves = {"m": ([1, 2], [0.5, 0.6], [0.1, 0.1])}
    PROBES.extend(generated(
        "plot_curves_with_spread", P, function("plot_curves_with_spread"),
        {"curves": curves, "xlabel": "x", "ylabel": "y"},
        {"curves": ({}, None, {"m": ([1, 2], [0.5])},
                    {"m": ([1, 2], [0.5], [0.1])},
                    {"m": ([0, 1], [0.5, 0.6], [0.1, 0.1])},
                    {"m": ([1, 2], [NAN, 0.6], [0.1, 0.1])},
                    {"m": ([1, 2], [0.5, 0.6], [-0.1, 0.1])}),
         "log_x": "flag"}))
    weights = np.ones((4, 2))
    PROBES.extend(generated(
        "plot_task_weights", P, function("plot_task_weights"),
        {"weights": weights, "tasks": ["a", "b"]},
        {"weights": (np.ones(4), np.ones((4, 3)), np.ones((0, 2)), None,
                     np.full((4, 2), NAN)),
         "tasks": (["a"], None),
         "steps_per_epoch": (0, -1, True, 1.5, "2"),
         "log_y": "flag", "axis": ("axis",)}))
    cosines = np.linspace(-1, 1, 20)
    PROBES.extend(generated(
        "plot_gradient_conflict", P, function("plot_gradient_conflict"),
        {"cosines": cosines},
        {"cosines": ([], np.ones((2, 2)), None, [NAN, 0.5], "0.5"),
         "window": "positive_int", "bins": (0, -1, True, 1.5, "30", None)}))
    PROBES.extend(generated(
        "plot_seed_spread", P, function("plot_seed_spread"),
        {"results": {"m": [0.5, 0.6]}, "ylabel": "y"},
        {"results": ({}, None, {"m": []}, {"m": [NAN, 0.5]},
                     {"m": "0.5"}, [0.5]),
         "reference": (NAN, INF, True, "0.5"), "axis": ("axis",)}))


def _results_probes():
    def function(name):
        return lambda **kw: getattr(_results(), name)(**kw)

    directory = tempfile.mkdtemp(dir=SCRATCH.name)
    bad_chapter = ("Bad Name", "", None, 1, "../escape", "a/b")
    PROBES.extend(generated(
        "store", R, function("store"),
        {"chapter": "probe", "directory": directory},
        {"chapter": bad_chapter,
         "tables": ([1], {"t": 1}, {"Bad": None}, "table"),
         "numbers": ([1], {"Bad Name": 1}, "numbers"),
         "figures": ([1], {"f": "figure"}, {"Bad": None}),
         "directory": (3,)}))
    PROBES.extend(generated(
        "load", R, function("load"), {"chapter": "probe"},
        {"chapter": bad_chapter, "directory": (3,)}))
    add("load-missing-directory",
        lambda: _results().load("probe", "/nonexistent"),
        correct(lambda r: r is None), R)
    PROBES.extend(generated(
        "show", R, function("show"), {"chapter": "probe"},
        {"chapter": bad_chapter}))
    add("code_hash-int", lambda: _results().code_hash(3),
        error("notebook", "3"), R)
    for value in ("record", None, [1]):
        add(f"provenance-record={value!r}",
            lambda v=value: _results().provenance(v),
            error("record", value=value), R)
    add("provenance-empty-record", lambda: _results().provenance({}),
        correct(lambda line: isinstance(line, str)), R)


_plot_probes()
_results_probes()


# ============================================================== continual
C = "mtlbook/continual.py"


def _continual():
    import mtlbook.continual as continual

    return continual


def _softmax_regression():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))


CONTINUAL_X = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
CONTINUAL_Y = np.array([0, 1, 2, 1, 0, 2], "int32")


def _continual_probes():
    def fisher(**kw):
        base = {"model": _softmax_regression(), "x": CONTINUAL_X}
        return _continual().fisher_diagonal(**{**base, **kw})

    def true_fisher(result):  # the closed form p_c (1 - p_c) x_j^2
        kernel, bias = _softmax_regression().get_weights()
        z = CONTINUAL_X.astype("float64") @ kernel + bias
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        expected = np.mean(CONTINUAL_X[:, :, None] ** 2
                           * (p * (1 - p))[:, None, :], axis=0)
        return close(result[0], expected) and close(result[1],
                                                    np.mean(p * (1 - p), 0))

    PROBES.extend(generated(
        "fisher_diagonal", C, fisher, {},
        {"labels": ("true", None, 1),
         "batch_size": "positive_int", "samples": "positive_int",
         "seed": (1.5, "0", -1), "from_logits": "flag",
         "model": ("net", None, keras.layers.Dense(3)),
         "variables": ([], "kernel", [np.ones(3)])}, tensorflow=True))
    add("fisher_diagonal-true-fisher-closed-form", lambda: fisher(),
        correct(true_fisher), C, tensorflow=True)
    add("fisher_diagonal-one-example", lambda: fisher(x=CONTINUAL_X[:1]),
        correct(lambda r: all(finite(a) and (a >= 0).all() for a in r)), C,
        tensorflow=True)
    add("fisher_diagonal-empirical-needs-y",
        lambda: fisher(labels="data"), error("y", "None"), C,
        tensorflow=True)
    add("fisher_diagonal-label-out-of-range",
        lambda: fisher(labels="data", y=np.full(6, 3, "int32")),
        error("y", show_value=False), C, tensorflow=True)
    add("fisher_diagonal-empty-x", lambda: fisher(x=CONTINUAL_X[:0]),
        error("x", "(0, 3)"), C, tensorflow=True)
    add("fisher_diagonal-nan-x",
        lambda: fisher(x=np.full((2, 3), NAN, "float32")),
        error("x", show_value=False), C, tensorflow=True)
    add("fisher_diagonal-wrong-features", lambda: fisher(x=np.ones((2, 5))),
        error("x", "(2, 5)"), C, tensorflow=True)
    add("fisher_diagonal-one-output-unit",
        lambda: fisher(model=keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(1)])),
        error("model", show_value=False), C, tensorflow=True)

    def penalty(**kw):
        model = _softmax_regression()
        base = {"variables": model.trainable_variables,
                "fisher": [np.ones((3, 3)), np.ones(3)]}
        return _continual().ElasticWeightConsolidation(**{**base, **kw})

    PROBES.extend(generated(
        "ElasticWeightConsolidation", C, penalty, {},
        {"strength": "float_ge0",
         "variables": ([], "kernel", None, [np.ones(3)]),
         "fisher": ("F", None, 1.0)}))
    add("ElasticWeightConsolidation-fisher-wrong-shape",
        lambda: penalty(fisher=[np.ones((3, 2)), np.ones(3)]),
        error("fisher[0]", "(3, 2)"), C)
    add("ElasticWeightConsolidation-fisher-count",
        lambda: penalty(fisher=[np.ones((3, 3))]), error("fisher", "1"), C)
    add("ElasticWeightConsolidation-negative-fisher",
        lambda: penalty(fisher=[-np.ones((3, 3)), np.ones(3)]),
        error("fisher[0]", "-1.0"), C)
    add("ElasticWeightConsolidation-nan-anchors",
        lambda: penalty(anchors=[np.full((3, 3), NAN), np.ones(3)]),
        error("anchors[0]", show_value=False), C)
    add("ElasticWeightConsolidation-zero-at-anchors", lambda: penalty()(),
        correct(lambda value: close(value, 0.0)), C)

    def moved():  # every weight moved by 0.5 from its anchor: 1/2 * 12 * 0.25
        ewc = penalty(strength=1.0)
        return ewc([v + 0.5 for v in ewc.anchors])

    add("ElasticWeightConsolidation-by-hand", moved,
        correct(lambda value: close(value, 1.5)), C)
    add("ElasticWeightConsolidation-zero-strength",
        lambda: penalty(strength=0.0)([v + 1e10 for v in penalty().anchors]),
        correct(lambda value: close(value, 0.0)), C)
    add("ElasticWeightConsolidation.update-wrong-shape",
        lambda: penalty().update([np.ones(3), np.ones(3)]),
        error("fisher[0]", "(3,)"), C)
    add("ElasticWeightConsolidation.__call__-wrong-values",
        lambda: penalty()([np.ones((3, 3))]), error("values", "1"), C)

    def set_strength(value):
        penalty().strength = value

    for value in (-1.0, NAN, True, "1"):
        add(f"ElasticWeightConsolidation.strength={value!r}",
            lambda v=value: set_strength(v), error("strength", value=value),
            C)


_continual_probes()


# =============================================================== grouping
GR = "mtlbook/grouping.py"


def _grouping():
    import mtlbook.grouping as grouping

    return grouping


def _grouping_probes():
    affinity4 = np.full((4, 4), -0.1)
    affinity4[0, 1] = affinity4[1, 0] = 0.3
    affinity4[2, 3] = affinity4[3, 2] = 0.2

    def select(**kw):
        base = {"affinity": affinity4, "max_groups": 2}
        return _grouping().select_groups(**{**base, **kw})

    def score(**kw):
        base = {"affinity": affinity4, "groups": [(0, 1), (2, 3)]}
        return _grouping().group_score(**{**base, **kw})

    def one_variable():
        import tensorflow as tf

        return tf.Variable([2.0])

    def lookahead(**kw):
        import tensorflow as tf

        w = kw.pop("w", None) or one_variable()
        base = {"task_losses": lambda: tf.stack([(w[0] - 1.0) ** 2,
                                                 (w[0] + 1.0) ** 2]),
                "shared_variables": [w], "learning_rate": 0.1}
        return _grouping().lookahead_affinity(**{**base, **kw})

    def by_hand():  # L0 = (w-1)^2, L1 = (w+1)^2 at w = 2, lr = 0.1
        gradients = (2.0, 6.0)
        losses = ((lambda w: (w - 1) ** 2), (lambda w: (w + 1) ** 2))
        return [[1 - losses[j](2.0 - 0.1 * g) / losses[j](2.0)
                 for j in range(2)] for g in gradients]

    x8 = np.zeros((8, 2), "float32")
    y8 = {"a": np.zeros(8, "float32"), "b": np.zeros(8, "float32")}

    def recorder(**kw):
        base = {"x": x8, "y": y8}
        return _grouping().InterTaskAffinity(**{**base, **kw})

    add("select_groups-planted-pairs", lambda: select(tasks="abcd"),
        correct(lambda v: v[0] == (("a", "b"), ("c", "d"))
                and abs(v[1] - 1.0) < 1e-9), GR)
    add("select_groups-negative-all-alone",
        lambda: select(affinity=-np.ones((3, 3)), max_groups=3),
        correct(lambda v: v == (((0,), (1,), (2,)), 0.0)), GR)
    PROBES.extend(generated("select_groups", GR, select, {},
                            {"max_groups": (0, 5, 1.5, True, "2", None)}))
    for label, value in (("nan", affinity4 * NAN), ("1d", np.ones(4)),
                         ("not-square", np.ones((3, 4))),
                         ("1x1", np.ones((1, 1))),
                         ("11x11", np.zeros((11, 11))), ("str", "z"),
                         ("None", None)):
        add(f"select_groups-affinity-{label}",
            lambda v=value: select(affinity=v),
            error("affinity", value=value), GR)
    add("select_groups-tasks-wrong-length", lambda: select(tasks="abc"),
        error("tasks", value="abc"), GR)
    add("group_score-by-hand", lambda: score(),
        correct(lambda v: abs(v - 1.0) < 1e-9), GR)
    add("group_score-groups-overlap",
        lambda: score(groups=[(0, 1), (1, 2)]),
        error("groups", show_value=False), GR)
    add("group_score-groups-out-of-range", lambda: score(groups=[(0, 7)]),
        error("groups", show_value=False), GR)

    add("lookahead_affinity-by-hand", lambda: lookahead(),
        correct(lambda v: close(v, by_hand(), rtol=1e-5)), GR, True)
    add("lookahead_affinity-restores-weights",
        lambda: (lambda w: (lookahead(w=w), w.numpy())[1])(one_variable()),
        correct(lambda v: close(v, [2.0])), GR, True)
    PROBES.extend(generated("lookahead_affinity", GR, lookahead, {},
                            {"learning_rate": "positive_float"}, True))
    add("lookahead_affinity-task_losses-not-callable",
        lambda: lookahead(task_losses=3.0),
        error("task_losses", value=3.0), GR, True)
    for label, value in (("empty", []), ("floats", [1.0]), ("None", None)):
        add(f"lookahead_affinity-shared_variables-{label}",
            lambda v=value: lookahead(shared_variables=v),
            error("shared_variables", value=value), GR, True)

    add("InterTaskAffinity-no-records",
        lambda: recorder().affinity, error("fit", "0 records"), GR, True)
    PROBES.extend(generated("InterTaskAffinity", GR, recorder, {},
                            {"every": "positive_int",
                             "batch_size": (0, -1, 1.5, True, "2"),
                             "learning_rate": (0.0, -1.0, NAN, INF, True,
                                               "1")}, True))
    add("InterTaskAffinity-y-list", lambda: recorder(y=[y8["a"]]),
        error("y", "list"), GR, True)
    add("InterTaskAffinity-rows-mismatch", lambda: recorder(x=x8[:4]),
        error(("x", "y"), show_value=False), GR, True)
    add("InterTaskAffinity-losses-missing-task",
        lambda: recorder(losses={"a": "mse"}),
        error("losses", show_value=False), GR, True)


_grouping_probes()


def _check_ids():
    ids = [probe.id for probe in PROBES]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise RuntimeError(f"duplicate probe ids: {duplicates}")


_check_ids()


# ------------------------------------------------------------ the tests
def _params():
    for probe in PROBES:
        marks = [pytest.mark.tensorflow] if probe.tensorflow else []
        yield pytest.param(probe, id=probe.id, marks=marks)


@pytest.mark.parametrize("probe", list(_params()))
def test_probe(probe):
    if probe.tensorflow and not TENSORFLOW:
        pytest.skip("needs the TensorFlow backend")
    outcome, detail = classify(probe)
    assert outcome in ("clear", "correct"), (
        f"{outcome} ({probe.file}): {detail}")


def summary(probes=None, stream=None):
    """Runs the probes and prints the counts and the failing probes.

    Args:
        probes: optional list of `Probe` (default: all that the backend
            can run).
        stream: optional text stream (default `sys.stdout`).

    Returns:
        dict `{outcome: count}` plus `"tried"`, and `"failures"`, a dict
        `{file: [(id, outcome, detail), ...]}`.
    """
    stream = stream or sys.stdout
    if probes is None:
        probes = [p for p in PROBES if TENSORFLOW or not p.tensorflow]
    counts = {"tried": 0, "clear": 0, "correct": 0, "obscure": 0,
              "silent": 0}
    failures = {}
    for probe in probes:
        outcome, detail = classify(probe)
        counts["tried"] += 1
        counts[outcome] += 1
        if outcome not in ("clear", "correct"):
            failures.setdefault(probe.file, []).append(
                (probe.id, outcome, detail))
    print(" ".join(f"{key}={value}" for key, value in counts.items()),
          file=stream)
    for file in sorted(failures):
        print(f"\n{file}", file=stream)
        for probe_id, outcome, detail in failures[file]:
            print(f"  {outcome:8s} {probe_id} -> {detail}", file=stream)
    return {**counts, "failures": failures}


if __name__ == "__main__":
    summary()


# ------------------------------------------------------------- coverage
PROBED_MODULES = ("layers", "weighting", "training", "transfer",
                  "adaptation", "data", "models", "metrics", "plot",
                  "results", "continual", "distillation", "grouping")


def public_names(module_name):
    """Public callables of `mtlbook.<module_name>`: its `__all__`, else
    the functions and classes defined in it without a leading `_`."""
    import importlib

    module = importlib.import_module(f"mtlbook.{module_name}")
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name, value in vars(module).items()
                 if not name.startswith("_") and callable(value)
                 and getattr(value, "__module__", "") == module.__name__]
    return sorted(name for name in names
                  if callable(getattr(module, name)))


def _probed_names():
    return {probe.id.split("-")[0].split(".")[0] for probe in PROBES}


@pytest.mark.tensorflow
@pytest.mark.parametrize("module_name", PROBED_MODULES)
def test_every_public_name_is_probed(module_name):
    missing = sorted(set(public_names(module_name)) - _probed_names())
    assert not missing, f"mtlbook.{module_name}: no probe for {missing}"
