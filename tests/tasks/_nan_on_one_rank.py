"""A 2-process DDP fit (CPU, gloo) whose loss is NaN on rank 1 only, at step 1.

    python tests/tasks/_nan_on_one_rank.py OUT

Used by test_finite_loss_ddp in a subprocess: Lightning's ``ddp`` launcher starts rank 1 by
running this script again, and only there do checkpoint callbacks run on the way out in
every rank (under ``ddp_spawn`` they run in the parent process, which has no model state).
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from tasks import ModelCheckpoint
from tasks.callbacks import FiniteLossCheck


class NanOnRank1(LightningModule):
    """A regression with BatchNorm whose loss is NaN on rank 1 at step 1."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1)
        )

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.net(batch[0]).pow(2).mean()
        if self.global_rank == 1 and self.global_step == 1:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    out = sys.argv[1]
    seed_everything(0)
    trainer = Trainer(
        accelerator="cpu", devices=2, max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=out,
        # a process left waiting fails within a minute, not Lightning's 30
        strategy=DDPStrategy(timeout=timedelta(seconds=60)),
        callbacks=[FiniteLossCheck(), ModelCheckpoint(dirpath=f"{out}/ckpt")],
    )  # fmt: skip
    data = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4)
    trainer.fit(NanOnRank1(), data)


if __name__ == "__main__":
    main()
