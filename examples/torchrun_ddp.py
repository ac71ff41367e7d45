"""The user guide's Scenario 2: DDP under torchrun, only rank 0 logging to W&B.

    torchrun --nproc_per_node=2 examples/torchrun_ddp.py [--steps N] [--all-ranks-log]

Runs on CPU with the gloo backend.  By default only rank 0 calls ``wandb.init`` /
``wandb.log`` (the other ranks never touch W&B, and the exporter sends nothing for
them).  ``--all-ranks-log`` gives every rank its own W&B run (grouped), logging its
local loss: Lens keeps the ranks apart.
"""

import argparse
import os

import torch
import torch.distributed as dist
import wandb


def main():
    parser = argparse.ArgumentParser(description="DDP on gloo, logging to W&B from rank 0 (or all ranks).")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--all-ranks-log", action="store_true", help="every rank logs to its own W&B run")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")

    dist.init_process_group(backend="gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    logs = rank == 0 or args.all_ranks_log

    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own shard

    if logs:
        wandb.init(project="primus-lens-examples", group="torchrun-ddp",
                   name=f"ddp-rank{rank}" if args.all_ranks_log else "ddp-training",
                   config={"world_size": world_size, "steps": args.steps})
    for step in range(args.steps):
        labels = torch.randint(0, 2, (32,), generator=generator)
        x = torch.randn(32, 8, generator=generator) + labels.unsqueeze(1).float()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if logs:
            accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
            wandb.log({"loss": loss.item(), "accuracy": accuracy, "rank_id": rank,
                       "learning_rate": optimizer.param_groups[0]["lr"]})
    if logs:
        wandb.finish()
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        print(f"done: {args.steps} steps on {world_size} ranks")


if __name__ == "__main__":
    main()
