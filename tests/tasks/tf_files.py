"""Where the real TF-released test files live: ``<repo>/../shared/tf-weights``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TF_WEIGHTS = Path(__file__).resolve().parents[2].parent / "shared" / "tf-weights"
FLOAT_DEEPLAB = TF_WEIGHTS / "tflite_deeplabv3_257_mv_gpu.tflite"
QUANT_DEEPLAB = TF_WEIGHTS / "coral_deeplabv3_mnv2_pascal_quant.tflite"
QUANT_CLASSIFIER = TF_WEIGHTS / "coral_mobilenet_v2_1.0_224_quant.tflite"
PHOTOS = ("grace_hopper.bmp", "cat.bmp", "parrot.jpg", "bird_segmentation.bmp")
BIRD_MASK = TF_WEIGHTS / "photos" / "bird_segmentation_mask.bmp"


def need(path: Path) -> Path:
    """Skip the test (with the reason) when a real TF file is absent."""
    if not path.is_file():
        pytest.skip(f"real TF test file not found: {path} (see ../shared/tf-weights/README.md)")
    return path


def photo(name: str, size: int) -> np.ndarray:
    """A test photo as uint8 ``[size, size, 3]`` RGB (bilinear resize)."""
    from PIL import Image

    path = need(TF_WEIGHTS / "photos" / name)
    with Image.open(path) as image:
        return np.array(image.convert("RGB").resize((size, size), Image.BILINEAR))
