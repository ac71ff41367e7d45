"""Stand-in for ``megatron/training/training.py`` of NVIDIA/Megatron-LM tag **core_v0.15.0**.

Our own minimal re-implementation (not Megatron's code) of what the exporter relies on:

- ``training_log(loss_dict, total_loss_dict, learning_rate, decoupled_learning_rate,
  iteration, loss_scale, report_memory_flag, skipped_iter, grad_norm, params_norm,
  num_zeros_in_grad)`` -- the core_v0.15 positional order (``decoupled_learning_rate``
  4th, no ``max_attention_logit``), called positionally from ``train()`` through the
  module global, on every rank, every iteration;
- the W&B gate: values go to ``wandb_writer.log({key: value}, iteration)`` only inside
  ``if writer and iteration % args.tensorboard_log_interval == 0`` (TensorBoard writer
  required), loss-scale only with ``args.log_loss_scale_to_tensorboard``;
- ``print_rank_last`` for the progress line every ``args.log_interval`` (Primus hooks it);
- the upstream assertion ``decoupled_learning_rate is None`` when ``args.decoupled_lr``
  is None (a framework error the exporter must let through untouched);
- ``loss_dict`` holds 0-dim tensors on last-pipeline-stage ranks and is empty elsewhere.
"""

import torch

import megatron.core  # noqa: F401  (upstream imports megatron.core (mpu, tensor_parallel ...) here)

from megatron.training.global_vars import get_args, get_tensorboard_writer, get_wandb_writer


def print_rank_last(message):
    args = get_args()
    if args.rank == args.world_size - 1:
        print(message, flush=True)


def is_pipeline_last_stage(args):
    per_stage = args.world_size // args.pipeline_model_parallel_size
    return args.rank >= args.world_size - per_stage


def training_log(loss_dict, total_loss_dict, learning_rate, decoupled_learning_rate, iteration,
                 loss_scale, report_memory_flag, skipped_iter, grad_norm, params_norm,
                 num_zeros_in_grad):
    """Log training information such as losses, timing, ...."""
    args = get_args()
    writer = get_tensorboard_writer()
    wandb_writer = get_wandb_writer()

    total_loss_dict["advanced iterations"] = total_loss_dict.get("advanced iterations", 0) + (not skipped_iter)
    for key in loss_dict:
        total_loss_dict[key] = total_loss_dict.get(key, torch.tensor([0.0])) + loss_dict[key]

    if writer and (iteration % args.tensorboard_log_interval == 0):
        if wandb_writer:
            wandb_writer.log({"samples vs steps": args.consumed_train_samples}, iteration)
        writer.add_scalar("learning-rate", learning_rate, iteration)
        if wandb_writer:
            wandb_writer.log({"learning-rate": learning_rate}, iteration)
        if args.decoupled_lr is not None:
            writer.add_scalar("decoupled-learning-rate", decoupled_learning_rate, iteration)
        batch_size = args.global_batch_size
        writer.add_scalar("batch-size", batch_size, iteration)
        if wandb_writer:
            wandb_writer.log({"batch-size": batch_size}, iteration)
        for key in loss_dict:
            writer.add_scalar(key, loss_dict[key], iteration)
            if wandb_writer:
                wandb_writer.log({key: loss_dict[key]}, iteration)
        if args.log_loss_scale_to_tensorboard:
            writer.add_scalar("loss-scale", loss_scale, iteration)
            if wandb_writer:
                wandb_writer.log({"loss-scale": loss_scale}, iteration)
        if grad_norm is not None:
            writer.add_scalar("grad-norm", grad_norm, iteration)
            if wandb_writer:
                wandb_writer.log({"grad-norm": grad_norm}, iteration)
        if num_zeros_in_grad is not None:
            writer.add_scalar("num-zeros", num_zeros_in_grad, iteration)
            if wandb_writer:
                wandb_writer.log({"num-zeros": num_zeros_in_grad}, iteration)
        if params_norm is not None:
            writer.add_scalar("params-norm", params_norm, iteration)
            if wandb_writer:
                wandb_writer.log({"params-norm": params_norm}, iteration)

    if iteration % args.log_interval == 0:
        log_string = f" iteration {iteration:8d}/{args.train_iters:8d} |"
        log_string += f" learning rate: {learning_rate:.6E} |"
        if args.decoupled_lr is not None and is_pipeline_last_stage(args):
            assert decoupled_learning_rate is not None
            log_string += f" decoupled learning rate: {decoupled_learning_rate:.6E} |"
        else:
            assert decoupled_learning_rate is None
        for key in list(total_loss_dict):
            if key != "advanced iterations":
                avg = total_loss_dict[key].item() / max(1, total_loss_dict["advanced iterations"])
                log_string += f" {key}: {avg:.6E} |"
                total_loss_dict[key] = torch.tensor([0.0])
        log_string += f" loss scale: {loss_scale:.1f} |"
        if grad_norm is not None:
            log_string += f" grad norm: {grad_norm:.3f} |"
        total_loss_dict["advanced iterations"] = 0
        print_rank_last(log_string)
    return report_memory_flag


def train_step(model, optimizer, batch):
    """One optimizer step; returns (loss_dict, skipped_iter, grad_norm, num_zeros_in_grad)."""
    args = get_args()
    inputs, targets = batch
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
    num_zeros = int(sum((p.grad == 0).sum() for p in model.parameters()))
    optimizer.step()
    loss_dict = {"lm loss": loss.detach()} if is_pipeline_last_stage(args) else {}
    return loss_dict, 0, grad_norm, num_zeros


def train(model, optimizer, batches, decoupled_learning_rate=None):
    """The part of Megatron's ``train()`` loop that leads to ``training_log``."""
    args = get_args()
    iteration = args.iteration
    total_loss_dict = {}
    report_memory_flag = True
    while iteration < args.train_iters:
        loss_dict, skipped_iter, grad_norm, num_zeros_in_grad = train_step(model, optimizer, batches[iteration])
        iteration += 1
        args.consumed_train_samples += args.global_batch_size
        loss_scale = optimizer.get_loss_scale().item()
        params_norm = None
        if args.log_params_norm:
            params_norm = float(torch.norm(torch.stack([p.detach().norm() for p in model.parameters()])))
        learning_rate = optimizer.param_groups[0]["lr"]
        report_memory_flag = training_log(
            loss_dict,
            total_loss_dict,
            learning_rate,
            decoupled_learning_rate,
            iteration,
            loss_scale,
            report_memory_flag,
            skipped_iter,
            grad_norm,
            params_norm,
            num_zeros_in_grad,
        )
    return iteration
