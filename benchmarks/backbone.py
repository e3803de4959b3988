"""Backbone and classifier against torchvision's mobilenet_v2: params, MAdds, latency.

    python -m benchmarks.backbone [--threads 2] [--repeats 30]

Prints one Markdown table; the ratio column is ours / torchvision's measured in the same
run (so machine noise cancels to first order).
"""

from __future__ import annotations

import argparse

import torch
import torchvision

from backbones import count_madds, count_parameters, mobilenet_v2
from benchmarks.timing import markdown_table, median_ms
from heads import mobilenet_v2_classifier


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, args.size, args.size)

    peer = torchvision.models.mobilenet_v2().eval()
    peer_features = peer.features.eval()
    ours = {
        "classifier (mobilenet_v2_classifier)": (mobilenet_v2_classifier().eval(), peer),
        "backbone to layer_19 (mobilenet_v2)": (
            mobilenet_v2(out_features=["layer_19"]).eval(),
            peer_features,
        ),
    }
    rows = []
    with torch.inference_mode():
        for name, (model, reference) in ours.items():
            # Interleave the two measurements so drift hits both alike.
            t_ref = median_ms(lambda m=reference: m(x), repeats=args.repeats)
            t_ours = median_ms(lambda m=model: m(x), repeats=args.repeats)
            rows.append([
                name,
                f"{count_parameters(model) / 1e6:.3f}M",
                f"{count_madds(model, x) / 1e6:.1f}M",
                t_ours,
                t_ref,
                t_ours / t_ref,
            ])  # fmt: skip
    table = markdown_table(
        ["model (batch 1, fp32, eager)", "params", "MAdds", "ours ms", "torchvision ms", "ratio"],
        rows,
    )
    print(f"{args.size}x{args.size}, {args.threads} threads, median of {args.repeats} runs\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
