"""Cost of checking a COCO instances file field by field, at the size of COCO train2017.

    python -m benchmarks.annotations [--images 118287] [--annotations 860001] [--root DIR]
        [--polygon-points 0]

Generates (once, under ``--root``) an instances JSON with COCO train2017's counts (118,287
images, 860,001 annotations, 80 categories with COCO's non-contiguous ids; polygons left
out unless ``--polygon-points N`` gives each annotation one polygon of N points: detection
does not read them, the mask-drawing data modules check them) and prints the time of each step of ``COCOAnnotations``: reading
the file, parsing the JSON, and the field-by-field validation (one pass). The validation
should cost no more than the JSON parse it follows.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import markdown_table
from tasks.data.coco import COCOAnnotations
from tasks.data.coco_schema import validate_coco
from tasks.data.validate import no_gc

#: COCO's 80 category ids (1..90 with gaps)
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def write_instances(
    path: Path, num_images: int, num_annotations: int, polygon_points: int = 0, seed: int = 0
) -> None:
    """A COCO-like instances file with the given counts (boxes inside 640x480 images, each
    with one polygon of ``polygon_points`` points inside its box, or none)."""
    rng = np.random.default_rng(seed)
    images = [
        {"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480}
        for i in range(1, num_images + 1)
    ]
    image_ids = rng.integers(1, num_images + 1, num_annotations).tolist()
    cats = rng.choice(COCO_CATEGORY_IDS, num_annotations).tolist()
    xy = (rng.random((num_annotations, 2)) * [600, 440]).round(2)
    wh = (rng.random((num_annotations, 2)) * 38 + 2).round(2)
    annotations = [
        {
            "id": k + 1,
            "image_id": image_ids[k],
            "category_id": cats[k],
            "bbox": [float(xy[k, 0]), float(xy[k, 1]), float(wh[k, 0]), float(wh[k, 1])],
            "area": float(wh[k, 0] * wh[k, 1]),
            "iscrowd": 0,
            "segmentation": _polygon(xy[k], wh[k], polygon_points),
        }
        for k in range(num_annotations)
    ]
    categories = [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in COCO_CATEGORY_IDS]
    data = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data))


def _polygon(xy: np.ndarray, wh: np.ndarray, points: int) -> list[list[float]]:
    if not points:
        return []
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    x = xy[0] + wh[0] / 2 * (1 + np.cos(angles))
    y = xy[1] + wh[1] / 2 * (1 + np.sin(angles))
    return [np.stack([x, y], 1).round(2).ravel().tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--annotations", type=int, default=860_001)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "mz_ann")
    parser.add_argument("--polygon-points", type=int, default=0)
    args = parser.parse_args()
    suffix = f"_poly{args.polygon_points}" if args.polygon_points else ""
    path = args.root / f"instances_{args.images}_{args.annotations}{suffix}.json"
    if not path.is_file():
        args.root.mkdir(parents=True, exist_ok=True)
        write_instances(path, args.images, args.annotations, args.polygon_points)

    steps: list[list[object]] = []

    def timed(name: str, fn, *args):  # wall and CPU s: the CPU column survives a busy machine
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args)
        steps.append([name, time.perf_counter() - wall, time.process_time() - cpu])
        return out

    with no_gc():  # as COCOAnnotations does
        raw = timed("read file", path.read_bytes)
        data = timed("json.loads", json.loads, raw)
        content = timed("validate_coco (every field, one pass)", validate_coco, data, path)
        content = timed(
            "validate_coco with masks=True (segmentation too)",
            validate_coco, data, path, False, True,
        )  # fmt: skip
    del raw, data, content
    timed("COCOAnnotations (all of the above, with the log line)", COCOAnnotations, path)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB, {args.images} images, "
        f"{args.annotations} annotations\n"
    )
    print(markdown_table(["step", "wall s", "CPU s"], steps))
    print(f"\npeak resident memory: {peak_gb:.2f} GiB")


if __name__ == "__main__":
    main()
