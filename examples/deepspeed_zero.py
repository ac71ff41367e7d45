"""DeepSpeed ZeRO on CPU (gloo), logging through DeepSpeed's own monitors.

    python examples/deepspeed_zero.py [--report-to wandb|csv|both] [--stage 2] [--steps 20]

Single process by default (RANK=0, WORLD_SIZE=1 and a free MASTER_PORT are filled
in when unset); under ``torchrun`` or the ``deepspeed`` launcher it uses theirs.
Nothing here mentions Lens: the installed exporter attaches itself to DeepSpeed's
``MonitorMaster``.  With ``--report-to wandb`` DeepSpeed's WandbMonitor calls
``wandb.init`` and logs ``Train/Samples/*`` with step = samples; ``--log-loss`` also logs the
loss with a plain ``wandb.log`` after each step, charted by its own ``global_step``
(``define_metric``), as users do next to DeepSpeed's monitor.
"""

import argparse
import os
import socket
import tempfile


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-to", choices=("wandb", "csv", "both"), default="wandb",
                        help="DeepSpeed monitors to enable (named --report-to: torchrun abbreviates --monitor)")
    parser.add_argument("--stage", type=int, default=2, choices=(0, 1, 2, 3))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--csv-dir", default=None, help="csv_monitor output_path (default: a temp dir)")
    parser.add_argument("--project", default="lens-deepspeed-example")
    parser.add_argument("--log-loss", action="store_true",
                        help="also wandb.log the loss after each step (into the monitor's W&B run)")
    args = parser.parse_args()

    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(name, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    # DeepSpeed compiles a small CPU op on first use; keep it between runs.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/torch_extensions"))

    import torch
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    config = {
        "train_micro_batch_size_per_gpu": args.micro_batch,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "Adam", "params": {"lr": 1e-2, "torch_adam": True}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 1e-2,
                                                     "warmup_num_steps": 10}},
        "zero_optimization": {"stage": args.stage},
        "steps_per_print": 10 ** 9,
    }
    if args.report_to in ("wandb", "both"):
        config["wandb"] = {"enabled": True, "project": args.project}
    if args.report_to in ("csv", "both"):
        config["csv_monitor"] = {"enabled": True, "output_path": args.csv_dir or tempfile.mkdtemp(),
                                 "job_name": "lens_example"}
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)

    log_loss = False
    if args.log_loss and engine.global_rank == 0:
        import wandb

        log_loss = wandb.run is not None  # the run DeepSpeed's WandbMonitor started
        if log_loss:
            wandb.define_metric("loss", step_metric="global_step")
    generator = torch.Generator().manual_seed(1 + int(os.environ["RANK"]))
    for _ in range(args.steps):
        x = torch.randn(args.micro_batch, 16, generator=generator)
        y = x.sum(dim=1, keepdim=True)
        loss = torch.nn.functional.mse_loss(engine(x), y)
        engine.backward(loss)
        engine.step()
        if log_loss:
            wandb.log({"loss": loss.item(), "global_step": engine.global_steps})
    if engine.global_rank == 0:
        print(f"done: {engine.global_steps} steps, {engine.global_samples} samples, loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
