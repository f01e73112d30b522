"""Every file of mtlbook/layers, weighting and transfer can be copied.

A reader may copy one file (say `weighting/mgda.py`) into a project of
their own. So each file imports only the standard library, NumPy, Keras
(never `keras.src`), the sibling files listed below (relatively,
`from .base import ...`, so that the copy works under any package name)
and TensorFlow only where listed. The copy test then copies each file
with just those siblings into an empty folder and imports and runs it
there, with `mtlbook` made unimportable (and, on JAX, TensorFlow too).
"""

import ast
import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mtlbook"

# Per folder, per module: the sibling modules it imports (and may import).
SIBLINGS = {
    "layers": {
        "__init__": {"adapter", "cross_stitch", "dense_stack",
                     "gradient_reversal", "mmoe", "ple"},
        "adapter": set(),
        "cross_stitch": set(),
        "dense_stack": set(),
        "gradient_reversal": set(),
        "mmoe": {"dense_stack"},
        "ple": {"dense_stack"},
    },
    "weighting": {
        "__init__": {"aligned", "base", "cagrad", "dwa", "equal", "famo",
                     "gradnorm", "imtl", "mgda", "nash", "pcgrad", "rlw",
                     "static", "uncertainty"},
        "aligned": {"base"},
        "base": set(),
        "cagrad": {"base"},
        "dwa": {"base"},
        "equal": {"base"},
        "famo": {"base"},
        "gradnorm": {"base"},
        "imtl": {"base"},
        "mgda": {"base"},
        "nash": {"base"},
        "pcgrad": {"base"},
        "rlw": {"base"},
        "static": {"base"},
        "uncertainty": {"base"},
    },
    "transfer": {
        "__init__": {"backbones", "freezing", "learning_rates", "lora",
                     "pretrained", "unfreezing"},
        "backbones": set(),
        "freezing": set(),
        "learning_rates": set(),
        "lora": set(),
        "pretrained": set(),
        "unfreezing": {"freezing"},
    },
}

# Other mtlbook modules a file may import (inside a function, so that the
# file still imports without them).
OUTSIDE = {
    # the book's data sets: what `transfer_digits` is made of
    "transfer/pretrained": {"mtlbook.data"},
}

# The files that may import TensorFlow, and why: none. Layers, loss
# weightings and gradient methods use keras.ops only (they run on JAX too).
TENSORFLOW = {}

# A tiny call of each layer and weighting file (its module's names, plus
# keras, ops, np and close(actual, expected)), run on the copy.
SMOKE = {
    "layers/__init__": "assert {'CrossStitch', 'PLE'} <= set(__all__)",
    "layers/adapter": "close(Adapter(2)(ops.ones((2, 3))), np.ones((2, 3)))",
    "layers/cross_stitch": (
        "a, b = CrossStitch(self_weight=1.0)([ops.ones((2, 3)),"
        " ops.zeros((2, 3))])\n"
        "close(a, np.ones((2, 3))); close(b, np.zeros((2, 3)))"
    ),
    "layers/dense_stack": (
        "assert DenseStack((32, 16))(ops.ones((4, 100))).shape == (4, 16)"
    ),
    "layers/gradient_reversal": (
        "close(GradientReversal(0.5)(ops.ones((2, 3))), np.ones((2, 3)))\n"
        "assert dann_lambda(0.0) == 0.0"
    ),
    "layers/mmoe": (
        "for layer in (MMoE(num_tasks=2, num_experts=3),"
        " OMoE(num_tasks=2, num_experts=3)):\n"
        "    a, b = layer(ops.ones((4, 5)))\n"
        "    assert a.shape[0] == b.shape[0] == 4"
    ),
    "layers/ple": (
        "for layer in (CGC(num_tasks=2), PLE(num_tasks=2, num_levels=2)):\n"
        "    a, b = layer(ops.ones((4, 5)))\n"
        "    assert a.shape[0] == b.shape[0] == 4"
    ),
    "weighting/__init__": "assert {'PCGrad', 'Strategy'} <= set(__all__)",
    "weighting/aligned": (
        "close(aligned_mtl([[1.0, 0.0], [0.0, 2.0]]), [0.5, 0.5])"
    ),
    "weighting/famo": (
        "close(famo_weights([0.0, 0.0], [1.0, 3.0]), [0.75, 0.25])"
    ),
    "weighting/rlw": (
        "close(ops.sum(random_loss_weights(3, seed=0, step=7)), 3.0)"
    ),
    "weighting/imtl": (
        "close(imtl_weights([[1.0, 0.0], [0.0, 2.0]]), [2 / 3, 1 / 3])"
    ),
    "weighting/nash": (
        "close(nash_mtl([[1.0, 0.0], [0.0, 2.0]], max_norm=0.0, ridge=0.0),"
        " [1.0, 1.0])"
    ),
    "weighting/base": (
        "assert check_task_gradients([[1.0, 0.0], [0.0, 1.0]]).shape"
        " == (2, 2)"
    ),
    "weighting/cagrad": (
        "close(cagrad([[1.0, 0.0], [-0.5, 1.0]], c=0.0), [0.25, 0.5])"
    ),
    "weighting/dwa": (
        "close(dwa_weights([1.0, 1.0], [1.0, 1.0], 2.0), [1.0, 1.0])"
    ),
    "weighting/equal": "close(EqualWeighting()(ops.array([0.5, 2.0])), 2.5)",
    "weighting/gradnorm": (
        "close(gradnorm_weight_gradient([1.0, 1.0], [1.0, 1.0],"
        " [1.0, 1.0], [2.0, 1.0]), [2.0, -1.0])"
    ),
    "weighting/mgda": (
        "close(mgda_weights([[1.0, 0.0], [0.0, 2.0]]), [0.8, 0.2])"
    ),
    "weighting/pcgrad": (
        "close(pcgrad([[1.0, 0.0], [-1.0, 1.0]], seed=0), [0.5, 1.5])"
    ),
    "weighting/static": (
        "close(StaticWeighting([1.0, 0.1])(ops.array([0.5, 2.0])), 0.7)"
    ),
    "weighting/uncertainty": (
        "close(UncertaintyWeighting()(ops.array([1.0, 1.0])), 1.0)"
    ),
}

MODULES = sorted(f"{folder}/{module}" for folder, modules in SIBLINGS.items()
                 for module in modules)
ALLOWED_TOP_LEVEL = set(sys.stdlib_module_names) | {"keras", "numpy"}


def imports(key):
    """`(level, module, names)` of every import statement in a file."""
    source = (PACKAGE / f"{key}.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]


def closure(key):
    """The module of `key` and every sibling it needs, directly or not."""
    folder, _ = key.split("/")
    needed, todo = set(), [key.split("/")[1]]
    while todo:
        module = todo.pop()
        if module not in needed:
            needed.add(module)
            todo.extend(SIBLINGS[folder][module])
    return needed


def needs_tensorflow(key):
    folder, _ = key.split("/")
    return any(f"{folder}/{m}" in TENSORFLOW for m in closure(key))


def test_every_module_is_listed():
    for folder, modules in SIBLINGS.items():
        files = {path.stem for path in (PACKAGE / folder).glob("*.py")}
        assert files == set(modules), (
            f"mtlbook/{folder}: list each module in SIBLINGS "
            f"(missing: {sorted(files - set(modules))}, "
            f"gone: {sorted(set(modules) - files)})"
        )
    assert set(OUTSIDE) | set(TENSORFLOW) | set(SMOKE) <= set(MODULES)
    assert {m for m in MODULES if not m.startswith("transfer/")} <= set(SMOKE)


@pytest.mark.parametrize("key", MODULES)
def test_imports_follow_the_graph(key):
    folder, module = key.split("/")
    siblings, problems, uses_tensorflow = set(), [], False
    for level, name, names in imports(key):
        top = name.split(".")[0]
        if level == 1:
            siblings.update(names if not name else [top])
        elif level > 1:
            problems.append(f"`from {'.' * level}{name}` leaves mtlbook/"
                            f"{folder}")
        elif top == "mtlbook":
            if name not in OUTSIDE.get(key, ()):
                problems.append(
                    f"`{name}`: import a sibling relatively "
                    "(`from .base import ...`); other mtlbook modules not"
                    " at all (or list them in OUTSIDE)")
        elif top == "tensorflow":
            uses_tensorflow = True
        elif name.startswith("keras.src"):
            problems.append(f"`{name}` is private Keras")
        elif top not in ALLOWED_TOP_LEVEL:
            problems.append(f"`{name}`: only the standard library, NumPy, "
                            "Keras and TensorFlow")
    assert not problems, f"mtlbook/{key}.py: {problems}"
    assert siblings == SIBLINGS[folder][module], (
        f"mtlbook/{key}.py imports the siblings {sorted(siblings)}; "
        f"SIBLINGS lists {sorted(SIBLINGS[folder][module])}"
    )
    assert uses_tensorflow == (key in TENSORFLOW), (
        f"mtlbook/{key}.py imports TensorFlow: {uses_tensorflow}; "
        f"listed in TENSORFLOW: {key in TENSORFLOW}"
    )


RUNNER = """
import importlib, json, os, sys, traceback
sys.modules["mtlbook"] = None  # the package itself must not be needed
if sys.argv[1] == "block-tensorflow":
    sys.modules["tensorflow"] = None
import keras
import numpy as np
from keras import ops


def close(actual, expected):
    np.testing.assert_allclose(ops.convert_to_numpy(actual), expected,
                               rtol=1e-5, atol=1e-6)


failures = {}
for key, package, name, smoke in json.loads(sys.argv[2]):
    try:
        module = importlib.import_module(name)
        assert module.__file__.startswith(os.getcwd()), module.__file__
        namespace = dict(vars(module), keras=keras, ops=ops, np=np,
                         close=close)
        exec(smoke, namespace)
    except Exception:
        failures[key] = traceback.format_exc()
print(json.dumps(failures))
"""


def run_copies(keys, folder, block_tensorflow):
    """Copies each file with its siblings into `folder` and runs them all
    in one fresh interpreter whose path has `folder` and site-packages."""
    jobs = []
    for key in keys:
        source, module = key.split("/")
        package = f"copy_of_{source}_{module.strip('_')}"
        (folder / package).mkdir()
        for needed in closure(key):
            shutil.copy(PACKAGE / source / f"{needed}.py", folder / package)
        if module != "__init__":
            (folder / package / "__init__.py").write_text("")
        name = package if module == "__init__" else f"{package}.{module}"
        jobs.append((key, package, name, SMOKE.get(key, "")))
    environment = dict(os.environ)
    environment.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", RUNNER,
         "block-tensorflow" if block_tensorflow else "-", json.dumps(jobs)],
        cwd=folder, env=environment, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{key}:\n{trace}"
                                   for key, trace in failures.items())


def test_copied_files_run_alone(tmp_path):
    # Without TensorFlow at all on JAX: it is not needed.
    keys = [key for key in MODULES if not needs_tensorflow(key)]
    run_copies(keys, tmp_path,
               block_tensorflow=keras.backend.backend() != "tensorflow")

    # (a file listed in TENSORFLOW would be copied with TensorFlow allowed)
    tensorflow_keys = [key for key in MODULES if needs_tensorflow(key)]
    if tensorflow_keys and keras.backend.backend() == "tensorflow":
        run_copies(tensorflow_keys, tmp_path / "tf", block_tensorflow=False)
