"""The user guide's Scenario 1: a plain PyTorch loop on one machine, logging with wandb.

    python examples/train_simple.py [--steps N]

Nothing here mentions Lens: with the exporter installed, every ``wandb.log`` below
is mirrored to Lens (set ``POD_NAME``/``WORKLOAD_UID`` and
``PRIMUS_LENS_API_BASE_URL``).  Runs on CPU in a few seconds; W&B runs offline
unless ``WANDB_MODE`` says otherwise.
"""

import argparse
import os

import torch
import wandb


def main():
    parser = argparse.ArgumentParser(description="Tiny PyTorch training loop logging to W&B.")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps (default 50)")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")

    torch.manual_seed(0)
    # Two Gaussian blobs: a task the model learns within a few dozen steps.
    n = 512
    labels = torch.randint(0, 2, (n,))
    inputs = torch.randn(n, 8) + labels.unsqueeze(1).float() * 0.8
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.steps, 1))

    run = wandb.init(project="primus-lens-examples", name="train-simple",
                     config={"lr": 0.02, "steps": args.steps, "batch_size": 64})
    batch = 64
    for step in range(args.steps):
        index = torch.randint(0, n, (batch,))
        x, y = inputs[index], labels[index]
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        wandb.log({
            "loss": loss.item(),
            "accuracy": accuracy.item(),
            "learning_rate": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm.item(),
            "epoch": step * batch // n,
        })
        scheduler.step()
    print(f"done: {args.steps} steps, loss {loss.item():.4f}, accuracy {accuracy.item():.3f}, run {run.id}")
    wandb.finish()


if __name__ == "__main__":
    main()
