"""MobileNet V1 with a seven-way head, and where its starting weights come from.

Scaling to [-1, 1] is a layer inside the model, so anything that feeds it 0-255 RGB from
`images.prepare` gets exactly the input the network was trained on. The softmax is a separate
layer after named logits, so the predictor can apply a calibration temperature.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

LAST_CONV_LAYER = "conv_pw_13_relu"   # Grad-CAM reads this block's activations
MEMBER_PREFIX = "member_"             # the networks of a side-by-side ensemble (ensemble_of)
LOGITS_LAYER = "logits"
POOL_LAYER = "pool"
DROPOUT_LAYER = "head_dropout"
COLOUR_LAYER = "colour_constancy"
PATIENT_LOGITS_LAYER = "patient_logits"
PATIENT_GAIN = 10.0
"""The patient head's one-hot inputs are this large while fitting. Adam moves every weight by about the
learning rate per step, which suits the network's thousands of weights on each logit but leaves a one-hot
column's single weight far too slow (run 41's first attempt learnt pushes of at most 0.1); scaled inputs move
the push ten times as fast. The bundle stores the weights times the gain, for one-hot inputs."""
# HAM10000's typical illuminant (R, G, B): the median shades-of-grey estimate (p=6) over the centre squares of
# 201 development photos. The pinkish skin around a lesion, not a grey card, is the reference.
REFERENCE_ILLUMINANT = (202.0, 150.0, 161.0)


class WeightsError(ValueError):
    """Starting weights that cannot be used."""


def resolve_weights(weights: str | None) -> str | None:
    """'imagenet' (Keras download), a path to a Keras .h5 weights file, or None / 'none'."""
    if weights in (None, "", "none", "None"):
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"Weights file not found: {path}")
    if path.suffix not in (".h5", ".hdf5"):            # Keras's own files, .weights.h5 among them
        raise WeightsError(f"Weights must be a Keras .h5 file, got {path.name}")
    return str(path)


@keras.saving.register_keras_serializable(package="skin_core")
class ColourConstancy(keras.layers.Layer):
    """Shades-of-grey colour constancy (Finlayson & Trezzi 2004) towards HAM10000's typical illuminant.

    Dermatoscopes and phone cameras differ in white balance and exposure more than lesions of one kind
    differ from each other. Each channel is scaled so that the photo's illuminant estimate (the
    Minkowski p-mean of the channel, dominated by the bright skin around the lesion) lands on a fixed
    reference. A typical development photo passes almost unchanged, so pretrained weights still fit,
    while a darker, brighter or tinted copy of it is brought back. No weights; 0-255 RGB in and out.
    """

    def __init__(self, power: float = 6.0, reference=REFERENCE_ILLUMINANT, **kwargs):
        super().__init__(**kwargs)
        self.power = float(power)
        self.reference = tuple(float(v) for v in reference)

    def call(self, images):
        ops = keras.ops
        pixels = ops.clip(ops.cast(images, self.compute_dtype), 0.0, 255.0)
        mean_power = ops.mean(ops.power(pixels / 255.0, self.power), axis=(1, 2), keepdims=True)
        illuminant = 255.0 * ops.power(mean_power + 1e-12, 1.0 / self.power)
        gain = ops.convert_to_tensor(self.reference, dtype=self.compute_dtype) / ops.maximum(illuminant, 1.0)
        return ops.clip(pixels * gain, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power, "reference": list(self.reference)}


def build_model(num_classes: int = 7, input_size: int = 224, alpha: float = 1.0,
                weights: str | None = "imagenet", dropout: float = 0.3,
                colour_constancy: bool = False) -> keras.Model:
    """A flat functional model: [colour constancy ->] scale -> MobileNet V1 body -> pool -> dropout -> logits -> softmax.

    The optional colour constancy has no weights, so weights move freely between models with and without it.
    """
    if input_size < 32:
        raise ValueError(f"MobileNet needs inputs of at least 32x32, got {input_size}.")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    pixels = ColourConstancy(name=COLOUR_LAYER)(inputs) if colour_constancy else inputs
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_to_unit")(pixels)
    try:
        body = keras.applications.MobileNet(input_tensor=scaled, alpha=alpha, include_top=False,
                                            weights=resolve_weights(weights))
    except (ValueError, OSError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"Cannot load weights {weights!r} into MobileNet(alpha={alpha}): {exc}") from None
    features = body.get_layer(LAST_CONV_LAYER).output
    x = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(features)
    x = keras.layers.Dropout(dropout, name=DROPOUT_LAYER)(x)
    logits = keras.layers.Dense(num_classes, name=LOGITS_LAYER)(x)
    probabilities = keras.layers.Activation("softmax", name="probabilities", dtype="float32")(logits)
    return keras.Model(inputs, probabilities, name=f"mobilenet_v1_{alpha}_{input_size}")


def with_patient_head(model: keras.Model, n_features: int) -> keras.Model:
    """The model training fits when age, sex and body site are known: the photo model's logits plus a linear
    push from the patient's one-hot details (skin_core.patients), both fed as a dict {"image", "patient"}.

    It shares its layers with `model`, which stays the photo model the bundle stores; the push starts at
    zero, so a model started from a trained bundle starts by answering exactly as that bundle.
    """
    patient = keras.Input((n_features,), name="patient")
    scaled = keras.layers.Rescaling(PATIENT_GAIN, name="patient_gain")(patient)
    push = keras.layers.Dense(model.output.shape[-1], use_bias=False, kernel_initializer="zeros",
                              name=PATIENT_LOGITS_LAYER)(scaled)
    logits = keras.layers.Add(name="logits_with_patient")([model.get_layer(LOGITS_LAYER).output, push])
    probabilities = keras.layers.Activation("softmax", name="probabilities_with_patient", dtype="float32")(logits)
    return keras.Model({"image": model.inputs[0], "patient": patient}, probabilities, name=model.name + "_patient")


def ensemble_of(models: list[keras.Model]) -> keras.Model:
    """Several trained networks served as one model whose logits are the mean of theirs.

    Each network keeps its own body up to its last block (a nested model named member_1, member_2, ...); the
    blocks' activations are concatenated into the layer Grad-CAM reads, pooled, and one dense layer holds the
    members' kernels stacked and halved (for two), so its logits are exactly the mean of the members' logits.
    The predictor, Grad-CAM and the familiarity check then serve it as they serve one network: the maps are
    those of the mean logit, the pooled features the members' side by side. Networks that read different
    input sizes, classes or a colour layer differently cannot be joined.

    The ensemble shares its layers with the networks given. Its weights (theirs too) are rounded to float16
    values here, as the bundle stores them (bundle.store_at_half_precision, to keep two networks under 20 MB),
    so every figure measured on it is the served model's.
    """
    first = models[0]
    if len(models) < 2:
        raise ValueError("An ensemble needs at least two networks.")
    for other in models[1:]:
        if other.input_shape != first.input_shape or other.output_shape != first.output_shape:
            raise ValueError("The networks of an ensemble must take the same input size and answer the same classes.")
        if (COLOUR_LAYER in _layer_names(other)) != (COLOUR_LAYER in _layer_names(first)):
            raise ValueError("Either every network of an ensemble has the colour constancy layer or none has.")
    if any(is_ensemble(member) for member in models):
        raise ValueError("An ensemble is built from single networks, not from other ensembles.")
    inputs = keras.Input(first.input_shape[1:], name="image")
    blocks = [keras.Model(member.input, member.get_layer(LAST_CONV_LAYER).output,
                          name=f"{MEMBER_PREFIX}{i}")(inputs) for i, member in enumerate(models, start=1)]
    features = keras.layers.Concatenate(name=LAST_CONV_LAYER)(blocks)
    pooled = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(features)
    dense = keras.layers.Dense(first.output_shape[-1], name=LOGITS_LAYER)
    logits = dense(pooled)
    kernels, biases = zip(*(member.get_layer(LOGITS_LAYER).get_weights() for member in models))
    dense.set_weights([np.concatenate(kernels) / len(models), np.mean(biases, axis=0)])
    probabilities = keras.layers.Activation("softmax", name="probabilities", dtype="float32")(logits)
    ensemble = keras.Model(inputs, probabilities, name=f"ensemble_of_{len(models)}")
    ensemble.set_weights([w.astype(np.float16).astype(w.dtype) if w.dtype == np.float32 else w
                          for w in ensemble.get_weights()])
    return ensemble


def member_weights(ensemble: keras.Model, index: int, own_bias: np.ndarray | None = None) -> list[np.ndarray]:
    """The weights of an ensemble's `index`th network (1, 2, ...) in the order a single network of its shape
    (build_model) holds them, to continue training from: its body as stored, its logits kernel the ensemble's rows
    for its features times the number of networks, and its own logits bias where the bundle recorded it
    (`own_bias`, from member_biases). The ensemble's layer keeps only the mean bias; without the network's own,
    the mean stands in, so its logits differ from the network's by one constant per class, which fitting relearns."""
    members = [layer for layer in ensemble.layers if layer.name.startswith(MEMBER_PREFIX)]
    if not 1 <= index <= len(members):
        raise ValueError(f"The ensemble holds {len(members)} networks; there is no network {index}.")
    kernel, bias = ensemble.get_layer(LOGITS_LAYER).get_weights()
    width = kernel.shape[0] // len(members)
    rows = kernel[(index - 1) * width:index * width] * len(members)
    if own_bias is not None:
        bias = np.asarray(own_bias, dtype=bias.dtype).reshape(bias.shape)
    return members[index - 1].get_weights() + [rows, bias]


def member_biases(models: list[keras.Model]) -> list[list[float]]:
    """Each network's own logits bias, for the manifest of the ensemble joining them: ensemble_of keeps only
    their mean, and member_weights needs a network's own to take it out exactly."""
    return [np.round(model.get_layer(LOGITS_LAYER).get_weights()[1].astype(float), 6).tolist() for model in models]


def is_ensemble(model: keras.Model) -> bool:
    """Whether the model holds several networks side by side (ensemble_of)."""
    return _member_count(model) > 0


def describe(model: keras.Model) -> str:
    """The architecture in words, for the manifest."""
    count = _member_count(model)
    if not count:
        return "keras.applications.MobileNet (V1), GlobalAveragePooling, Dropout, Dense"
    return (f"{count} networks side by side, each keras.applications.MobileNet (V1) to its last block; one "
            "GlobalAveragePooling and Dense over their features give the mean of their logits")


def _member_count(model: keras.Model) -> int:
    """How many networks an ensemble holds side by side (0: the model is one network)."""
    return sum(name.startswith(MEMBER_PREFIX) for name in _layer_names(model))


def _layer_names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers}


def body_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The pretrained MobileNet layers, in order (everything between the scaling and the head)."""
    names = [layer.name for layer in model.layers]
    start, stop = names.index("scale_to_unit") + 1, names.index(POOL_LAYER)
    return model.layers[start:stop]


def set_trainable_from(model: keras.Model, fraction: float) -> None:
    """Freeze the body except its last `fraction` of layers (0 = head only, 1 = everything)."""
    body = body_layers(model)
    first_trainable = int(round(len(body) * (1 - fraction)))
    for i, layer in enumerate(body):
        layer.trainable = i >= first_trainable
