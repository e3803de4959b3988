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


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` 8-bit gray pixels, with no pixel data:
    the few bytes a decompression bomb needs to be opened."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("width", "height"),
    [(10_000, 10_000), (100_000, 100_000), (1, 2**31 - 1)],
    ids=["above-limit", "pillow-bomb", "absurd-shape"],
)
@pytest.mark.parametrize("reader", [read_image, read_label_png], ids=["image", "mask"])
def test_decompression_bombs_are_bad_samples(tmp_path: Path, reader, width, height) -> None:
    path = tmp_path / "bomb.png"
    png_header_only(path, width, height)
    with pytest.raises(BadSampleError, match=r"bomb.png: .*(above the limit|decompression bomb)"):
        reader(path)


def test_pixel_limit_is_set_by_environment(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (20, 30, 3)
    monkeypatch.setenv("MOBILEZOO_MAX_IMAGE_PIXELS", "599")
    with pytest.raises(BadSampleError, match=r"a.png: image is 30x20 = 600 pixels, above .* 599"):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv("MOBILEZOO_MAX_IMAGE_PIXELS", "600")
    assert read_label_png(tmp_path / "a.png").shape == (20, 30)
    monkeypatch.setenv("MOBILEZOO_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="MOBILEZOO_MAX_IMAGE_PIXELS must be a positive integer"):
        read_image(tmp_path / "a.png")


@pytest.mark.parametrize(
    ("values", "suffix", "message"),
    [
        (np.array([[-1, 0], [3, 200]], np.int32), "tif", r"found -1\.\.200 in mode I"),
        (np.array([[0, 300], [3, 4]], np.uint16), "png", r"found 0\.\.300 in mode I;16"),
        (np.array([[0.0, 1.0], [3.0, 4.0]], np.float32), "tif", "got mode F"),
        (np.zeros((2, 2, 4), np.uint8), "png", "got mode RGBA"),
    ],
    ids=["int32-negative", "int16-above-255", "float", "rgba"],
)
def test_mask_modes_and_values_outside_0_255_are_named(tmp_path, values, suffix, message):
    path = tmp_path / f"m.{suffix}"
    Image.fromarray(values).save(path)
    with pytest.raises(BadSampleError, match=f"m.{suffix}: .*{message}"):
        read_label_png(path)


def test_wide_masks_with_byte_values_are_read(tmp_path: Path) -> None:
    values = np.array([[0, 7], [19, 255]])
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "m.tif")
    Image.fromarray(values.astype(np.uint16)).save(tmp_path / "m.png")
    for name in ("m.tif", "m.png"):
        np.testing.assert_array_equal(read_label_png(tmp_path / name), values)
