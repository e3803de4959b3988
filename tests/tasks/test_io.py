"""Image and mask reading: odd formats read right, bad files named in the error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.data.io import BadSampleError, read_image, read_label_png

RGB = np.array([[[200, 30, 10], [0, 128, 255]], [[255, 255, 255], [0, 0, 0]]], dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path: Path) -> None:
    Image.fromarray(RGB).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_other_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    gray = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray(gray.astype(np.uint16) * 257)  # PIL stores it as I;16
    elif mode == "CMYK":
        img = Image.fromarray(np.repeat(gray[..., None], 3, 2)).convert("CMYK")
    elif mode == "P":  # adaptive palette: exact for 4 colours (the web palette is lossy)
        img = Image.fromarray(np.repeat(gray[..., None], 3, 2)).convert("P", palette=Image.ADAPTIVE)
    else:
        img = Image.fromarray(np.repeat(gray[..., None], 3, 2)).convert(mode)
    path = tmp_path / ("a.tif" if mode == "CMYK" else "a.png")
    img.save(path)
    out = read_image(path)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    # Same gray levels whatever the storage mode (palette and CMYK within rounding).
    np.testing.assert_allclose(out[..., 0].astype(int), gray, atol=2)


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(array).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)  # displayed upright: taller than wide
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # white half now on top


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "image file not found"),
        (lambda p: p.write_bytes(b""), "image file is empty"),
        (lambda p: p.write_text("definitely not a jpeg"), "not a readable image"),
        (lambda p: p.write_bytes(_jpeg_bytes()[:300]), "not a readable image"),
    ],
    ids=["missing", "empty", "not-an-image", "truncated"],
)
def test_bad_image_files_are_named(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(BadSampleError, match=f"bad.jpg: {message}"):
        read_image(path)


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_palette_mask_reads_indices_not_colours(tmp_path: Path) -> None:
    mask = np.array([[0, 1], [15, 255]], dtype=np.uint8)
    img = Image.fromarray(mask, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0] + [7] * (253 * 3) + [224, 224, 192])
    img.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "m.png"), mask)


def test_rgb_mask_is_rejected(tmp_path: Path) -> None:
    Image.fromarray(RGB).save(tmp_path / "m.png")
    with pytest.raises(BadSampleError, match="m.png: mask must be a palette or single-channel"):
        read_label_png(tmp_path / "m.png")
