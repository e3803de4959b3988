"""Data loading under pressure: a large mixed set with bad files, several workers.

    python -m benchmarks.data_load [--num-images 20000] [--workers 2] [--root DIR]

Generates (once, under ``--root``) an ImageFolder set of mixed sizes (48-400 px) and
formats (RGB JPEG, RGB/gray/RGBA/16-bit PNG, CMYK JPEG, EXIF-rotated JPEG) with about 3%
bad files (empty, truncated, text), then reads one training epoch with
``on_bad_sample="skip"`` and prints throughput, the skip count, and the resident memory of
the loader (main process + workers) over the epoch. Memory must stay flat: the last
quarter of the epoch may not exceed the first quarter by more than a few per cent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.timing import markdown_table
from tasks.data.base import LoaderOptions
from tasks.data.imagefolder import ImageFolderDataModule

FORMATS = ("jpeg", "png", "gray", "rgba", "png16", "cmyk", "exif")


def _write_sample(path: Path, rng: np.random.Generator, kind: str) -> None:
    h, w = (int(v) for v in rng.integers(48, 400, size=2))
    rgb = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).resize((w, h))
    if kind == "jpeg":
        img.save(path.with_suffix(".jpg"), quality=85)
    elif kind == "png":
        img.save(path.with_suffix(".png"))
    elif kind == "gray":
        img.convert("L").save(path.with_suffix(".png"))
    elif kind == "rgba":
        img.convert("RGBA").save(path.with_suffix(".png"))
    elif kind == "png16":
        Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257).save(
            path.with_suffix(".png")
        )
    elif kind == "cmyk":
        img.convert("CMYK").save(path.with_suffix(".jpg"), quality=85)
    else:  # EXIF-rotated JPEG
        exif = Image.Exif()
        exif[0x0112] = 6
        img.save(path.with_suffix(".jpg"), exif=exif, quality=85)


def _write_bad(path: Path, rng: np.random.Generator) -> None:
    kind = int(rng.integers(0, 3))
    target = path.with_suffix(".jpg")
    if kind == 0:
        target.write_bytes(b"")
    elif kind == 1:
        target.write_text("this is not an image")
    else:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(target, quality=90)
        target.write_bytes(target.read_bytes()[:200])


def make_pressure_set(
    root: Path, num_images: int, bad_fraction: float = 0.03, seed: int = 0
) -> int:
    """Write the set (10 classes) unless it exists; returns the number of bad files."""
    marker = root / f".complete_{num_images}_{bad_fraction}_{seed}"
    bad = round(num_images * bad_fraction)
    if marker.exists():
        return bad
    rng = np.random.default_rng(seed)
    bad_ids = set(rng.choice(num_images, size=bad, replace=False).tolist())
    for i in range(num_images):
        folder = root / "train" / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        if i in bad_ids:
            _write_bad(folder / f"{i:06d}", rng)
        else:
            _write_sample(folder / f"{i:06d}", rng, FORMATS[i % len(FORMATS)])
    (root / "val").mkdir(exist_ok=True)
    marker.touch()
    return bad


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return kids


def loader_rss_mb() -> float:
    """Resident memory of this process and its loader workers, in MiB."""
    me = os.getpid()
    total = _rss_mb(me)
    for child in _children(me):
        with contextlib.suppress(OSError):  # a worker may exit meanwhile
            total += _rss_mb(child)
    return total


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--root", default="/tmp/mobilezoo_pressure")
    args = parser.parse_args(argv)
    root = Path(args.root)
    start = time.perf_counter()
    bad = make_pressure_set(root, args.num_images)
    print(f"set ready in {time.perf_counter() - start:.0f} s: {args.num_images} files, {bad} bad")

    dm = ImageFolderDataModule(str(root), image_size=args.image_size, resize_size=args.image_size,
                               loader=LoaderOptions(batch_size=args.batch_size,
                                                    num_workers=args.workers, on_bad_sample="skip",
                                                    persistent_workers=False))  # fmt: skip
    dm.train_set = dm._dataset("train", train=True)
    loader = dm.train_dataloader()
    samples: list[float] = []
    seen = 0
    start = time.perf_counter()
    for i, (images, _) in enumerate(loader):
        seen += images.shape[0]
        if i % 5 == 0:
            samples.append(loader_rss_mb())
    elapsed = time.perf_counter() - start
    quarter = max(1, len(samples) // 4)
    early, late = max(samples[:quarter]), max(samples[-quarter:])
    rows = [[
        args.num_images, args.workers, seen, dm.skipped_samples, bad, seen / elapsed,
        seen / elapsed / max(1, args.workers), max(samples), early, late, late / early,
    ]]  # fmt: skip
    header = ["files", "workers", "images read", "failed reads (skipped)", "bad files",
              "images/s", "images/s/worker", "peak RSS MiB", "RSS 1st quarter",
              "RSS last quarter", "growth"]  # fmt: skip
    table = markdown_table(header, rows)
    print(table)
    return table


if __name__ == "__main__":
    main()
