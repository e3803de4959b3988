"""Detection + segmentation in one pass against SSDLite and DeepLab run one after the other.

    python benchmarks/multitask.py                   # MAdds/params + interleaved latency
    python benchmarks/multitask.py --train-steps 400 # + demo training, same steps each

Latency: batch 1, fp32, the same thread count for every candidate, at 320x320 (SSDLite's
size) with COCO-sized heads (80 object classes, 81 mask classes). The joint model and the
two single models are called in turn, one call each per round (``interleaved_medians``),
so load from other processes hits all alike; compare the ratio column.
``--det-classes 8 --seg-classes 19`` gives the Cityscapes heads.

Training: the joint model, SSDLite and an output-stride-16 Mobile DeepLabv3 are trained for
the same number of steps on the same batches of the generated demo (boxes + masks, 128 px,
width 0.5) with the same optimizer, then scored with the task's metrics (pycocotools mAP,
mIoU from one confusion matrix).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backbones.complexity import count_madds, count_parameters  # noqa: E402
from benchmarks.timing import (  # noqa: E402
    interleaved_medians,
    markdown_table,
    settle_batchnorm,
)
from heads.deeplabv3 import deeplabv3_mobilenet_v2  # noqa: E402
from heads.inference import RawGraph, optimize_for_inference  # noqa: E402
from heads.joint import ssdlite_deeplabv3_mobilenet_v2  # noqa: E402
from heads.ssdlite import ssdlite_mobilenet_v2  # noqa: E402


# -- complexity ----------------------------------------------------------------------------
def complexity_rows(size: int, det: int = 80, seg: int = 81) -> list[list[object]]:
    x = torch.zeros(1, 3, size, size)
    rows: list[list[object]] = []
    ssd = ssdlite_mobilenet_v2(det).eval()
    ssd_madds = count_madds(ssd, x)
    dl = {os: deeplabv3_mobilenet_v2(seg, output_stride=os).eval() for os in (32, 16, 8)}
    dl_madds = {os: count_madds(m, x) for os, m in dl.items()}
    single = ssd_madds + dl_madds[16]

    def row(name: str, params: int, madds: int) -> None:
        rows.append([name, f"{params / 1e6:.3f}", f"{madds / 1e9:.3f}", f"{madds / single:.2f}"])

    row(f"SSDLite ({det})", count_parameters(ssd), ssd_madds)
    for os, m in dl.items():
        row(f"DeepLabv3 OS{os} ({seg})", count_parameters(m), dl_madds[os])
    row(
        "SSDLite + DeepLabv3 OS16, back to back",
        count_parameters(ssd) + count_parameters(dl[16]),
        single,
    )
    for skip in (None, "layer_4", "layer_7", "layer_14"):
        m = ssdlite_deeplabv3_mobilenet_v2(det, seg, seg_skip=skip).eval()
        label = f"joint, skip {skip}" + (" (default)" if skip == "layer_7" else "")
        row(label, count_parameters(m), count_madds(m, x))
    # The alternative: a dilated stride-16 copy of layer_15..layer_18 for the mask branch.
    # Its cost over the stride-32 joint model is what OS16 DeepLab costs over OS32 DeepLab.
    base = count_madds(ssdlite_deeplabv3_mobilenet_v2(det, seg, seg_skip=None).eval(), x)
    extra_params = sum(
        p.numel() for i in range(14, 18) for p in dl[16].backbone.features[i].parameters()
    )
    row(
        "joint, stride-16 mask branch (layer_15..18 twice)",
        count_parameters(ssdlite_deeplabv3_mobilenet_v2(det, seg, seg_skip=None)) + extra_params,
        base + dl_madds[16] - dl_madds[32],
    )
    return rows


# -- latency -------------------------------------------------------------------------------
class _LowResJoint(nn.Module):
    """The joint graph without the last upsampling: mask logits at stride 8."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = self.model
        taps = m.backbone(images)
        cls_logits, box_deltas = m.head(m.detector.maps_from_taps(taps))
        skip = taps[m.seg_skip_feature]
        logits = F.interpolate(
            m.seg_head(taps[m.seg_feature]), size=skip.shape[-2:], mode="bilinear"
        )
        return cls_logits, box_deltas, logits + m.seg_skip(skip)


class _LowResDeepLab(nn.Module):
    """DeepLab without the last upsampling: logits at stride 16."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.head(self.model.backbone(images)[self.model.feature])


def latency_rows(
    size: int, threads: int, warmup: int, repeats: int, det: int = 80, seg: int = 81
) -> list[list[object]]:
    from tasks.export import export_onnx, ort_session

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    joint = settle_batchnorm(ssdlite_deeplabv3_mobilenet_v2(det, seg), size)
    ssd = settle_batchnorm(ssdlite_mobilenet_v2(det), size)
    dl = settle_batchnorm(deeplabv3_mobilenet_v2(seg, output_stride=16), size)
    x = torch.randn(1, 3, size, size)
    xc = x.contiguous(memory_format=torch.channels_last)
    xn = x.numpy()
    fast = {k: optimize_for_inference(m) for k, m in (("j", joint), ("s", ssd), ("d", dl))}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_onnx(RawGraph(joint, (size, size)), "joint", folder / "joint.onnx", (size, size))
        export_onnx(RawGraph(ssd, (size, size)), "raw", folder / "ssd.onnx", (size, size))
        export_onnx(dl, "segmenter", folder / "dl.onnx", (size, size))
        export_onnx(_LowResJoint(joint), "segmenter", folder / "joint_low.onnx", (size, size))
        export_onnx(_LowResDeepLab(dl), "segmenter", folder / "dl_low.onnx", (size, size))
        names = ("joint", "ssd", "dl", "joint_low", "dl_low")
        sess = {k: ort_session(folder / f"{k}.onnx", threads, spinning=False) for k in names}

        def eager_joint() -> object:
            with torch.no_grad():
                return joint.forward_raw(x)

        def eager_pair() -> object:
            with torch.no_grad():
                return ssd.forward_raw(x), dl(x)

        def fast_joint() -> object:
            with torch.inference_mode():
                return fast["j"].model.forward_raw(xc)

        def fast_pair() -> object:
            with torch.inference_mode():
                return fast["s"].model.forward_raw(xc), fast["d"].model(xc)

        cands = {
            "eager joint": eager_joint,
            "eager pair": eager_pair,
            "fast joint": fast_joint,
            "fast pair": fast_pair,
            "ort joint": lambda: sess["joint"].run(None, {"images": xn}),
            "ort pair": lambda: (
                sess["ssd"].run(None, {"images": xn}),
                sess["dl"].run(None, {"images": xn}),
            ),
            # where the time goes: the same graphs without the last (full-size) upsampling
            "ort-no-final-upsample joint": lambda: sess["joint_low"].run(None, {"images": xn}),
            "ort-no-final-upsample pair": lambda: (
                sess["ssd"].run(None, {"images": xn}),
                sess["dl_low"].run(None, {"images": xn}),
            ),
        }
        ms = interleaved_medians(cands, warmup, repeats)
    rows = []
    for path in ("eager", "fast", "ort", "ort-no-final-upsample"):
        j, p = ms[f"{path} joint"], ms[f"{path} pair"]
        rows.append([path, j, p, f"{j / p:.2f}"])
    return rows


# -- demo training -------------------------------------------------------------------------
def _lr(step: int, steps: int, base: float, warmup: int = 50) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


TRAIN_MODELS = ("joint", "ssdlite", "deeplab", "joint_noskip")


def train_demo(
    steps: int, threads: int, root: str | None, which: tuple[str, ...] = TRAIN_MODELS[:3]
) -> list[list[object]]:
    import tasks  # noqa: F401  (albumentations set-up)
    from heads import MultiBoxLossOptions
    from tasks.data.base import LoaderOptions
    from tasks.data.demo.multitask import DemoMultiTaskDataModule
    from tasks.metrics.coco import STAT_NAMES, COCOEvaluator, detections_to_coco
    from tasks.metrics.segmentation import SegmentationMetrics

    torch.set_num_threads(threads)
    dm = DemoMultiTaskDataModule(root=root, loader=LoaderOptions(batch_size=16))
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("validate")
    ncls = dm.num_classes
    tf_mining = MultiBoxLossOptions(min_negatives=3)
    builders = {
        "joint": lambda: ssdlite_deeplabv3_mobilenet_v2(
            ncls, ncls + 1, width_mult=0.5, image_size=128, loss=tf_mining
        ),
        "ssdlite": lambda: ssdlite_mobilenet_v2(
            ncls, width_mult=0.5, image_size=128, loss=tf_mining
        ),
        "deeplab": lambda: deeplabv3_mobilenet_v2(ncls + 1, width_mult=0.5),
        "joint_noskip": lambda: ssdlite_deeplabv3_mobilenet_v2(
            ncls, ncls + 1, width_mult=0.5, image_size=128, loss=tf_mining, seg_skip=None
        ),
    }
    labels = {
        "joint": "joint (one pass, layer_7 skip)",
        "ssdlite": "SSDLite alone",
        "deeplab": "DeepLabv3 OS16 alone",
        "joint_noskip": "joint without the skip",
    }
    rows: list[list[object]] = []
    for key in which:
        build, name = builders[key], labels[key]
        torch.manual_seed(0)
        model = build()
        is_det, is_seg = key != "deeplab", key != "ssdlite"
        opt = torch.optim.AdamW(model.parameters(), lr=0.004, weight_decay=1e-4)
        torch.manual_seed(0)  # the same batches, in the same order, for every model
        loader = dm.train_dataloader()
        step, start = 0, time.perf_counter()
        model.train()
        while step < steps:
            for images, targets in loader:
                if step >= steps:
                    break
                for group in opt.param_groups:
                    group["lr"] = _lr(step, steps, 0.004)
                masks = torch.stack([t["mask"] for t in targets])
                loss = images.new_zeros(())
                if is_det:
                    outputs = model.forward_outputs(images)
                    loss = loss + model.compute_loss(outputs, targets)["loss"]
                    seg_logits = outputs.get("seg_logits")
                else:
                    seg_logits = model(images)
                if is_seg:
                    loss = loss + F.cross_entropy(seg_logits, masks, ignore_index=255)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
        seconds = time.perf_counter() - start
        model.eval()
        evaluator = COCOEvaluator(dm.ground_truth("validate"))
        metrics = SegmentationMetrics(ncls + 1)
        with torch.no_grad():
            for images, targets in dm.val_dataloader():
                if is_det:
                    out = model.forward_outputs(images)
                    dets = model.postprocessor(
                        out["cls_logits"], out["box_deltas"], out["anchors"], images.shape[-2:]
                    )
                    ids = [int(t["image_id"]) for t in targets]
                    scales = [(1.0, 1.0)] * len(ids)
                    evaluator.update(detections_to_coco(dets, ids, scales, dm.category_ids))
                    seg = out.get("seg_logits")
                else:
                    seg = model(images)
                if is_seg:
                    metrics.update(seg.argmax(1), torch.stack([t["mask"] for t in targets]))
        stats = evaluator.compute() if is_det else dict.fromkeys(STAT_NAMES, float("nan"))
        miou = float(metrics.compute()["miou"]) if is_seg else float("nan")
        rows.append([name, steps, stats["map"], stats["map_50"], miou, seconds / steps])
    return rows


def _fmt(rows: list[list[object]]) -> list[list[object]]:
    return [[f"{v:.3f}" if isinstance(v, float) else v for v in r] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--det-classes", type=int, default=80, help="COCO 80, Cityscapes 8")
    parser.add_argument("--seg-classes", type=int, default=81, help="COCO 81, Cityscapes 19")
    parser.add_argument("--train-steps", type=int, default=0, help="0: no demo training")
    parser.add_argument("--demo-root", default=None, help="demo data folder (default: cache)")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--train-models",
        default="joint,ssdlite,deeplab",
        help=f"comma-separated subset of {','.join(TRAIN_MODELS)}",
    )
    args = parser.parse_args()
    classes = f"{args.det_classes} object / {args.seg_classes} mask classes"
    print(f"## Complexity at {args.size}x{args.size}, batch 1, {classes}\n")
    header = ["model", "params (M)", "MAdds (G)", "MAdds / back-to-back"]
    print(markdown_table(header, complexity_rows(args.size, args.det_classes, args.seg_classes)))
    if not args.no_latency:
        print(
            f"\n## Latency, batch 1, fp32, {args.threads} thread(s), {args.size}x{args.size}, "
            f"{classes}, median of {args.repeats} interleaved rounds\n"
        )
        rows = latency_rows(
            args.size, args.threads, args.warmup, args.repeats, args.det_classes, args.seg_classes
        )
        header = ["path", "joint (ms)", "SSDLite + DeepLab OS16 (ms)", "ratio"]
        print(markdown_table(header, rows))
    if args.train_steps:
        print(f"\n## Demo training, {args.train_steps} steps of 16 images each, width 0.5\n")
        which = tuple(args.train_models.split(","))
        unknown = [m for m in which if m not in TRAIN_MODELS]
        if unknown:
            parser.error(f"--train-models: unknown {unknown}, choose from {TRAIN_MODELS}")
        rows = train_demo(args.train_steps, args.threads, args.demo_root, which)
        header = ["model", "steps", "mAP", "AP50", "mIoU", "s/step"]
        print(markdown_table(header, _fmt(rows)))


if __name__ == "__main__":
    main()
