"""PyTorch Lightning on CPU, logging with ``WandbLogger`` (or without W&B).

    python examples/lightning_wandb.py [--logger wandb|csv|lens] [--epochs 3] [--strategy auto|ddp]

Nothing here mentions Lens except ``--logger lens``: the installed exporter is loaded by
Lightning itself (``callbacks_factory`` entry point) in every ``Trainer``.

- ``wandb``: Lens mirrors the W&B stream; metrics are stepped by ``trainer/global_step``.
- ``csv``: no W&B; a ``LensLogger`` is appended to ``trainer.loggers`` and reports the same
  metrics (data source ``lightning``).
- ``lens``: ``Trainer(logger=[CSVLogger(...), LensLogger()])``, the explicit form.
"""

import argparse
import os
import tempfile


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logger", choices=("wandb", "csv", "lens"), default="wandb")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--strategy", default="auto", help="Lightning strategy (auto, ddp, ...)")
    parser.add_argument("--project", default="lens-lightning-example")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")

    import torch
    import lightning.pytorch as L
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from torch.utils.data import DataLoader, TensorDataset

    class Regressor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    torch.manual_seed(0)
    x = torch.randn(256, 8)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    out = tempfile.mkdtemp(prefix="lens-lightning-")
    if args.logger == "wandb":
        logger = WandbLogger(project=args.project, save_dir=out)
    elif args.logger == "csv":
        logger = CSVLogger(out)
    else:
        from primus_lens_wandb_exporter import LensLogger

        logger = [CSVLogger(out), LensLogger()]
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1 if args.strategy == "auto" else 2,
                        strategy=args.strategy, logger=logger, log_every_n_steps=5, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=out)
    trainer.fit(Regressor(), DataLoader(data, batch_size=16, shuffle=True), DataLoader(data, batch_size=64))
    if trainer.global_rank == 0:
        print(f"done: {trainer.global_step} steps; loggers: {[type(lg).__name__ for lg in trainer.loggers]}")
    if args.logger == "wandb":
        import wandb

        wandb.finish()


if __name__ == "__main__":
    main()
