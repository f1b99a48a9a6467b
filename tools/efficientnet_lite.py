"""EfficientNet-Lite0 in Keras (functional API), with weights ported from a PyTorch state dict.

The architecture follows the TensorFlow EfficientNet-Lite reference: MBConv blocks without
squeeze-excitation, ReLU6 everywhere, fixed 32-channel stem and 1280-channel head, TF "same"
padding (which is what lukemelas' ``Conv2dStaticSamePadding`` implements as well). The weight
names are those of lukemelas' EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N._expand_conv``...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

NUM_CLASSES = 1000
IMAGE_SIZE = 224
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# lukemelas' default batch_norm_epsilon (and the TF EfficientNet one); confirmed by accuracy.
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class Stage:
    kernel: int
    stride: int
    expand: int
    out: int
    repeats: int


LITE0_STAGES: tuple[Stage, ...] = (
    Stage(3, 1, 1, 16, 1),
    Stage(3, 2, 6, 24, 2),
    Stage(5, 2, 6, 40, 2),
    Stage(3, 2, 6, 80, 3),
    Stage(5, 1, 6, 112, 3),
    Stage(5, 2, 6, 192, 4),
    Stage(3, 1, 6, 320, 1),
)


@dataclass(frozen=True)
class BlockSpec:
    index: int
    kernel: int
    stride: int
    expand: int
    inputs: int
    out: int

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.inputs == self.out


def block_specs(stages: tuple[Stage, ...] = LITE0_STAGES) -> list[BlockSpec]:
    """Expand the stage table into one spec per MBConv block (16 for Lite0)."""
    specs: list[BlockSpec] = []
    channels = STEM_CHANNELS
    for stage in stages:
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            specs.append(BlockSpec(len(specs), stage.kernel, stride, stage.expand, channels,
                                   stage.out))
            channels = stage.out
    return specs


def build_keras_model(input_name: str = "image", output_name: str = "probabilities",
                      bn_epsilon: float = BN_EPSILON):
    """Build the (untrained) Keras model; layer names mirror the PyTorch module names."""
    import keras
    from keras import layers

    def bn(name: str):
        return layers.BatchNormalization(epsilon=bn_epsilon, momentum=0.99, name=name)

    def relu6(name: str):
        return layers.ReLU(max_value=6.0, name=name)

    image = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name=input_name)
    x = layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False,
                      name="conv_stem")(image)
    x = relu6("stem_relu")(bn("bn0")(x))
    for spec in block_specs():
        prefix = f"blocks_{spec.index}"
        shortcut = x
        if spec.expand != 1:
            x = layers.Conv2D(spec.inputs * spec.expand, 1, padding="same", use_bias=False,
                              name=f"{prefix}_expand_conv")(x)
            x = relu6(f"{prefix}_expand_relu")(bn(f"{prefix}_bn0")(x))
        x = layers.DepthwiseConv2D(spec.kernel, strides=spec.stride, padding="same",
                                   use_bias=False, name=f"{prefix}_depthwise_conv")(x)
        x = relu6(f"{prefix}_depthwise_relu")(bn(f"{prefix}_bn1")(x))
        x = layers.Conv2D(spec.out, 1, padding="same", use_bias=False,
                          name=f"{prefix}_project_conv")(x)
        x = bn(f"{prefix}_bn2")(x)
        if spec.has_skip:
            x = layers.Add(name=f"{prefix}_add")([shortcut, x])
    x = layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="conv_head")(x)
    x = relu6("head_relu")(bn("bn1")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = layers.Dense(NUM_CLASSES, name="fc")(x)
    probabilities = layers.Softmax(name=output_name, dtype="float32")(logits)
    return keras.Model(image, probabilities, name="efficientnet_lite0")


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch conv (O, I, kh, kw) -> Keras (kh, kw, I, O)."""
    return np.transpose(weight, (2, 3, 1, 0))


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch depthwise (C, 1, kh, kw) -> Keras (kh, kw, C, 1)."""
    return np.transpose(weight, (2, 3, 0, 1))


def _bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.weight"], state[f"{prefix}.bias"],
            state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]]


def torch_to_keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Map a lukemelas state dict to ``{keras layer name: layer weights}``."""
    weights: dict[str, list[np.ndarray]] = {
        "conv_stem": [_conv_kernel(state["_conv_stem.weight"])],
        "bn0": _bn_weights(state, "_bn0"),
        "conv_head": [_conv_kernel(state["_conv_head.weight"])],
        "bn1": _bn_weights(state, "_bn1"),
        "fc": [state["_fc.weight"].T, state["_fc.bias"]],
    }
    for spec in block_specs():
        src, dst = f"_blocks.{spec.index}", f"blocks_{spec.index}"
        if spec.expand != 1:
            weights[f"{dst}_expand_conv"] = [_conv_kernel(state[f"{src}._expand_conv.weight"])]
            weights[f"{dst}_bn0"] = _bn_weights(state, f"{src}._bn0")
        weights[f"{dst}_depthwise_conv"] = [
            _depthwise_kernel(state[f"{src}._depthwise_conv.weight"])]
        weights[f"{dst}_bn1"] = _bn_weights(state, f"{src}._bn1")
        weights[f"{dst}_project_conv"] = [_conv_kernel(state[f"{src}._project_conv.weight"])]
        weights[f"{dst}_bn2"] = _bn_weights(state, f"{src}._bn2")
    return weights


def load_ported_weights(model, state: dict[str, np.ndarray]) -> int:
    """Copy the state dict into ``model``; every weighted layer and tensor must be used.

    Returns the number of PyTorch tensors consumed (``num_batches_tracked`` counters are skipped).
    """
    mapping = torch_to_keras_weights(state)
    weighted = {layer.name for layer in model.layers if layer.weights}
    if weighted != set(mapping):
        raise ValueError(f"layer mismatch: keras-only {sorted(weighted - set(mapping))[:5]}, "
                         f"torch-only {sorted(set(mapping) - weighted)[:5]}")
    for name, values in mapping.items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(f"{name}: keras expects {expected}, checkpoint gives {got}")
        layer.set_weights([np.asarray(v, dtype=np.float32) for v in values])
    used = sum(len(v) for v in mapping.values())
    counters = sum(1 for k in state if k.endswith("num_batches_tracked"))
    if used + counters != len(state):
        raise ValueError(f"checkpoint has {len(state)} entries; mapped {used} tensors "
                         f"and {counters} counters")
    logger.debug("ported %d tensors into %d layers", used, len(mapping))
    return used
