"""Transfer learning and fine-tuning utilities.

- `backbone`, `preprocessing_layer`, `BACKBONES`: Keras Applications
  networks with ImageNet weights, a local weights file, or none.
- `pretrained_digits_cnn`, `small_cnn`, `transfer_digits`,
  `scatter_on_canvas`: an offline pretrained source network (digits 0-4),
  cached, and the source/target data.
- `freeze`, `unfreeze`, `trainable_summary`: freezing that keeps
  BatchNormalization in inference mode; `bitfit`, `is_bias`: train the
  biases only (BitFit).
- `enable_lora`, `merge_lora`, `lora_state`, `load_lora_state`,
  `lora_parameter_count`, `takes_lora`: Keras's LoRA over a whole model,
  merged for serving, and per-task LoRA sets switched on one backbone.
- `DiscriminativeAdam`, `DiscriminativeAdamW`, `DiscriminativeSGD`,
  `LearningRateMultipliers`, `discriminative_multipliers`: learning-rate
  groups that work with `compile` / `fit`.
- `SlantedTriangular`: the slanted triangular learning-rate schedule.
- `GradualUnfreezing`: a callback unfreezing one group per epoch.
"""

from .backbones import BACKBONES, backbone, preprocessing_layer
from .freezing import (
    bitfit,
    freeze,
    is_batchnorm,
    is_bias,
    trainable_summary,
    unfreeze,
)
from .learning_rates import (
    DiscriminativeAdam,
    DiscriminativeAdamW,
    DiscriminativeSGD,
    LearningRateMultipliers,
    SlantedTriangular,
    discriminative_multipliers,
    multiplier_for,
)
from .lora import (
    enable_lora,
    load_lora_state,
    lora_parameter_count,
    lora_state,
    merge_lora,
    takes_lora,
)
from .pretrained import (
    SOURCE_DIGITS,
    TARGET_DIGITS,
    cache_directory,
    compile_classifier,
    pretrained_digits_cnn,
    scatter_on_canvas,
    small_cnn,
    transfer_digits,
)
from .unfreezing import GradualUnfreezing

__all__ = [
    "BACKBONES", "DiscriminativeAdam", "DiscriminativeAdamW",
    "DiscriminativeSGD", "GradualUnfreezing", "LearningRateMultipliers",
    "SOURCE_DIGITS", "SlantedTriangular", "TARGET_DIGITS", "backbone",
    "bitfit", "cache_directory", "compile_classifier",
    "discriminative_multipliers", "enable_lora", "freeze", "is_batchnorm",
    "is_bias", "load_lora_state", "lora_parameter_count", "lora_state",
    "merge_lora", "multiplier_for", "pretrained_digits_cnn",
    "preprocessing_layer", "scatter_on_canvas", "small_cnn", "takes_lora",
    "trainable_summary", "transfer_digits", "unfreeze",
]
