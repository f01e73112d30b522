"""Shared test set-up: quiet, deterministic TensorFlow.

No MPLBACKEND is set here: the notebooks that nbval runs inherit this
process's environment, and under Agg a kernel displays no figure
(tests/test_figures.py). Matplotlib picks a non-GUI backend by itself in a
process without a display.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
