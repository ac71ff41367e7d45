"""The training program ``primus-lens demo`` runs: a tiny model in pure Python, logging with wandb.

    python -m primus_lens_wandb_exporter.cli.demo_train [--steps N] [--batch-size B]

It ships in the package so the demo works after ``pip install`` without a clone and without
torch or numpy (``examples/train_simple.py`` is the same loop in PyTorch).  Like any user
program it never mentions Lens: the exporter's start-up line mirrors its ``wandb.log`` calls.
The model is logistic regression on two Gaussian blobs, trained with SGD + momentum and a
cosine learning-rate schedule, so loss, accuracy, learning rate and gradient norm all move.
"""

import argparse
import math
import os
import random

FEATURES = 8


def _dataset(n: int, rng: random.Random):
    """Two blobs 0.8 apart on every axis: learnable within a few dozen steps."""
    data = []
    for _ in range(n):
        label = rng.randint(0, 1)
        data.append(([rng.gauss(0.0, 1.0) + 0.8 * label for _ in range(FEATURES)], label))
    return data


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Tiny pure-Python training loop logging to W&B "
                                                 "(the model primus-lens demo trains).")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step (default 64)")
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    rng = random.Random(0)
    n = 512
    data = _dataset(n, rng)
    weights, bias = [0.0] * FEATURES, 0.0
    velocity, v_bias = [0.0] * FEATURES, 0.0
    run = wandb.init(project="primus-lens-demo", name="demo-train",
                     config={"model": "logistic-regression", "lr": args.lr, "steps": args.steps,
                             "batch_size": args.batch_size, "optimizer": "sgd-momentum-0.9"})
    loss = accuracy = 0.0
    for step in range(args.steps):
        lr = 0.5 * args.lr * (1 + math.cos(math.pi * step / max(args.steps, 1)))
        batch = [data[rng.randrange(n)] for _ in range(args.batch_size)]
        grad, g_bias, loss, correct = [0.0] * FEATURES, 0.0, 0.0, 0
        for x, y in batch:
            p = _sigmoid(sum(w * xi for w, xi in zip(weights, x)) + bias)
            loss -= math.log(max(p if y else 1 - p, 1e-12))
            correct += (p >= 0.5) == bool(y)
            for i in range(FEATURES):
                grad[i] += (p - y) * x[i]
            g_bias += p - y
        size = len(batch)
        grad, g_bias = [g / size for g in grad], g_bias / size
        loss, accuracy = loss / size, correct / size
        grad_norm = math.sqrt(sum(g * g for g in grad) + g_bias * g_bias)
        velocity = [0.9 * v + g for v, g in zip(velocity, grad)]
        v_bias = 0.9 * v_bias + g_bias
        weights = [w - lr * v for w, v in zip(weights, velocity)]
        bias -= lr * v_bias
        wandb.log({"loss": loss, "accuracy": accuracy, "learning_rate": lr, "grad_norm": grad_norm,
                   "epoch": step * args.batch_size // n})
    print(f"done: {args.steps} steps, loss {loss:.4f}, accuracy {accuracy:.3f}, run {run.id}")
    wandb.finish()


if __name__ == "__main__":
    main()
