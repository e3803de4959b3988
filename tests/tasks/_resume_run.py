"""Train the classifier on a tiny folder; optionally kill itself mid-epoch.

    python _resume_run.py DATA OUT [--kill-at STEP --signal TERM|KILL] [--resume CKPT]

Used by test_resume.py in a subprocess, so that a real signal ends a real process.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from tasks import ClassificationTask, ImageFolderDataModule, ModelCheckpoint, WarmupCosineLR
from tasks.data.base import LoaderOptions


class KillAt(Callback):
    def __init__(self, step: int, sig: signal.Signals) -> None:
        self.step, self.sig = step, sig

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--kill-at", type=int)
    p.add_argument("--signal", choices=["TERM", "KILL"], default="TERM")
    p.add_argument("--resume")
    a = p.parse_args()
    seed_everything(0)
    torch.set_num_threads(1)
    callbacks: list[Callback] = [
        ModelCheckpoint(
            a.out, save_last=True, every_n_train_steps=2, save_top_k=0, save_on_exception=True
        )
    ]
    if a.kill_at:
        callbacks.append(KillAt(a.kill_at, getattr(signal, f"SIG{a.signal}")))
    task = ClassificationTask(
        num_classes=2, width_mult=0.35, dropout=0.5,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        lr_scheduler=lambda opt: WarmupCosineLR(opt, warmup_steps=2),
    )  # fmt: skip
    data = ImageFolderDataModule(
        a.data, image_size=32, resize_size=36, loader=LoaderOptions(batch_size=2, num_workers=1)
    )
    trainer = Trainer(
        max_epochs=2, deterministic=True, logger=False, callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(task, data, ckpt_path=a.resume)
    torch.save(task.state_dict(), os.path.join(a.out, "final.pt"))
    print("metrics", {k: float(v) for k, v in trainer.callback_metrics.items()})
    sys.exit(0)


if __name__ == "__main__":
    main()
