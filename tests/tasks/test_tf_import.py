"""Converted TF-released models against the TF Lite runtime, on real files and photos.

The files live in ``<repo>/../shared/tf-weights`` (never copied into the project); tests
skip with the reason when they or ``ai-edge-litert`` are absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tasks.tf_files import (
    BIRD_MASK,
    FLOAT_DEEPLAB,
    PHOTOS,
    QUANT_CLASSIFIER,
    QUANT_DEEPLAB,
    need,
    photo,
)

pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
litert = pytest.importorskip(
    "ai_edge_litert.interpreter", reason="ai-edge-litert (TF Lite runtime) is not installed"
)

from heads import get_model_builder  # noqa: E402
from heads.tf_import import convert_file  # noqa: E402


def run_tflite(path, image: np.ndarray) -> np.ndarray:
    """The runtime's first output for one ``[H, W, 3]`` input (uint8 or float)."""
    interpreter = litert.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]


def to_tensor(image: np.ndarray, mean: float, std: float) -> torch.Tensor:
    return torch.from_numpy((image.astype(np.float32) - mean) / std).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def float_deeplab():
    model, meta = convert_file(need(FLOAT_DEEPLAB), builders=get_model_builder)
    return model, meta


def test_float_deeplab_reads_its_architecture_from_the_file(float_deeplab) -> None:
    _, meta = float_deeplab
    assert meta["builder"] == "deeplabv3_mobilenet_v2"
    assert meta["architecture"] == {
        "num_classes": 21,
        "width_mult": 0.5,
        "divisible_by": 1,  # TF keeps 12/72 channels; rounding to 8 would not load
        "padding": "tf",
        "output_stride": 8,  # the builder rebuilds it from the file (not its default 16)
        "align_corners": True,
        "aspp": False,
    }


@pytest.mark.parametrize("name", PHOTOS)
def test_float_deeplab_equals_tflite_runtime(float_deeplab, name: str) -> None:
    model, _ = float_deeplab
    image = photo(name, 257).astype(np.float32) / 127.5 - 1.0
    reference = run_tflite(FLOAT_DEEPLAB, image)  # [257, 257, 21] logits
    with torch.no_grad():
        ours = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - reference).max() < 1e-3
    assert (ours.argmax(-1) == reference.argmax(-1)).mean() >= 0.999


def test_float_deeplab_needs_align_corners(float_deeplab) -> None:
    """With PyTorch's default upsampling the same weights disagree with TF on pixels."""
    model, _ = float_deeplab
    image = photo("bird_segmentation.bmp", 257).astype(np.float32) / 127.5 - 1.0
    reference = run_tflite(FLOAT_DEEPLAB, image)
    model.align_corners = False
    try:
        with torch.no_grad():
            ours = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
    finally:
        model.align_corners = True
    assert np.abs(ours.numpy() - reference).max() > 0.1


def test_channel_rounding_makes_the_float_deeplab_unloadable() -> None:
    with pytest.raises(ValueError, match="shape"):
        convert_file(need(FLOAT_DEEPLAB), divisible_by=8, builders=get_model_builder)


@pytest.fixture(scope="module")
def quant_deeplab():
    return convert_file(need(QUANT_DEEPLAB), builders=get_model_builder)[0]


@pytest.mark.parametrize("name", PHOTOS)
def test_8bit_deeplab_dequantized_agrees_with_runtime(quant_deeplab, name: str) -> None:
    image = photo(name, 513)  # the 8-bit input: real value (q - 128) / 128
    reference = run_tflite(QUANT_DEEPLAB, image)  # [513, 513] argmax
    with torch.no_grad():
        ours = quant_deeplab(to_tensor(image, 128.0, 128.0))[0].argmax(0).numpy()
    agreement = (ours == reference).mean()
    print(f"{name}: per-pixel agreement with the 8-bit runtime {agreement:.4f}")
    assert agreement >= 0.97


def test_8bit_deeplab_bird_iou(quant_deeplab) -> None:
    from PIL import Image

    with Image.open(need(BIRD_MASK)) as mask_image:
        mask = np.asarray(mask_image)
    assert mask.shape == (513, 513)
    image = photo("bird_segmentation.bmp", 513)
    with torch.no_grad():
        ours = quant_deeplab(to_tensor(image, 128.0, 128.0))[0].argmax(0).numpy()
    reference = run_tflite(QUANT_DEEPLAB, image)
    bird = 3
    ious = {}
    for who, pred in (("ours", ours), ("tflite", reference)):
        inter = np.logical_and(pred == bird, mask == bird).sum()
        union = np.logical_or(pred == bird, mask == bird).sum()
        ious[who] = inter / union
    print(f"bird IoU vs the VOC mask: ours {ious['ours']:.4f}, 8-bit runtime {ious['tflite']:.4f}")
    assert abs(ious["ours"] - ious["tflite"]) < 0.02
    assert ious["ours"] > 0.8


def test_8bit_classifier_same_top1_on_every_photo() -> None:
    model, meta = convert_file(need(QUANT_CLASSIFIER), builders=get_model_builder)
    assert meta["num_classes"] == 1000  # TF's background class 0 dropped
    for name in PHOTOS:
        image = photo(name, 224)
        reference = run_tflite(QUANT_CLASSIFIER, image)  # [1001] uint8 softmax
        with torch.no_grad():
            ours = model(to_tensor(image, 128.0, 128.0))[0]
        assert int(ours.argmax()) + 1 == int(reference.argmax()), name


def test_8bit_classifier_probabilities_need_tf_padding() -> None:
    """At 224 (even) only TF's "SAME" padding reproduces the runtime's probabilities."""
    tf_model, _ = convert_file(need(QUANT_CLASSIFIER), builders=get_model_builder)
    torch_model, _ = convert_file(QUANT_CLASSIFIER, padding="torch", builders=get_model_builder)
    worst = {"tf": 0.0, "torch": 0.0}
    for name in PHOTOS:
        image = photo(name, 224)
        reference = run_tflite(QUANT_CLASSIFIER, image)[1:].astype(np.float64) / 256.0
        for key, model in (("tf", tf_model), ("torch", torch_model)):
            with torch.no_grad():
                probs = model(to_tensor(image, 128.0, 128.0))[0].softmax(0).numpy()
            worst[key] = max(worst[key], float(np.abs(probs - reference).max()))
    print(f"max probability difference to the 8-bit runtime: {worst}")
    assert worst["tf"] < 0.03 < 0.1 < worst["torch"]


def test_tf_evaluation_protocol_pads_to_the_crop_size(float_deeplab) -> None:
    """TF evaluates a smaller image padded (bottom/right, mean pixel) to the crop size:
    ``predict_padded`` gives the runtime's logits on the image's own pixels; running on the
    unpadded image does not."""
    from PIL import Image

    from heads import predict_padded

    model, _ = float_deeplab
    with Image.open(need(FLOAT_DEEPLAB.parent / "photos" / "cat.bmp")) as image:
        small = np.array(image.convert("RGB").resize((241, 181), Image.BILINEAR))
    x = small.astype(np.float32) / 127.5 - 1.0  # [181, 241, 3]
    padded = np.zeros((257, 257, 3), dtype=np.float32)
    padded[:181, :241] = x
    reference = run_tflite(FLOAT_DEEPLAB, padded)[:181, :241]
    tensor = torch.from_numpy(x).permute(2, 0, 1)[None]
    with torch.no_grad():
        ours = predict_padded(model, tensor, 257)[0].permute(1, 2, 0).numpy()
        unpadded = model(tensor)[0].permute(1, 2, 0).numpy()
    assert ours.shape == (181, 241, 21)
    assert np.abs(ours - reference).max() < 1e-3
    assert np.abs(unpadded - reference).max() > 0.1
