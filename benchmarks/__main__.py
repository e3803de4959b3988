"""``python -m benchmarks``: the whole benchmark suite in one run (see ``benchmarks.suite``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.suite import OUT_DIR, Options, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Params/MAdds, CPU latency (eager, fast path, onnxruntime fp32/int8) against "
        "torchvision's MobileNets, training and data-loading throughput, COCO evaluation "
        "time, int8 accuracy. Writes results.md and results.png.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny inputs, a smoke run")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=9,
        help="timed runs per path at batch 8 (batch 1: 3x as many)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per path")
    parser.add_argument("--output_dir", type=Path, default=OUT_DIR)
    for kind in ("classifier", "detector", "segmenter"):
        parser.add_argument(
            f"--{kind}_ckpt",
            help=f"trained {kind} checkpoint (demo config): adds its fp32 vs int8 accuracy",
        )
    args = parser.parse_args(argv)
    accuracy = {
        kind: ckpt
        for kind in ("classifier", "detector", "segmenter")
        if (ckpt := getattr(args, f"{kind}_ckpt"))
    }
    report = run(
        Options(
            quick=args.quick,
            threads=args.threads,
            repeats=args.repeats,
            warmup=args.warmup,
            output_dir=args.output_dir,
            accuracy=accuracy,
        )
    )
    print(report)


if __name__ == "__main__":
    main()
