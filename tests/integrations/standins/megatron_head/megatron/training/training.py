"""Stand-in for ``megatron/training/training.py`` of NVIDIA/Megatron-LM **main at
d98e8a64ddf34856e74b24714e3bedb2f5a39553 (2026-08-22, megatron-core 0.20.0)**.

Our own minimal re-implementation (not Megatron's code) of what the exporter relies on:

- ``training_log(loss_dict, total_loss_dict, learning_rate, iteration, loss_scale,
  report_memory_flag, skipped_iter, grad_norm, params_norm, num_zeros_in_grad,
  max_attention_logit, pg_collection=None, is_first_iteration=False,
  seqlen_squared_sum_in_batch=None, total_real_tokens_in_batch=None)`` -- HEAD's order
  (no ``decoupled_learning_rate``; ``max_attention_logit`` 11th), called from
  ``train()`` with 11 positional and 4 keyword arguments through the module global;
- ``learning_rate`` may be None (ranks without trainable parameters); the W&B gate
  ``if writer and iteration % args.tensorboard_log_interval == 0``; loss-scale only with
  ``args.log_loss_scale_to_tensorboard``, max_attention_logit only with
  ``args.log_max_attention_logit``;
- ``print_rank_last`` for the progress line every ``args.log_interval``.
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


def training_log(
    loss_dict,
    total_loss_dict,
    learning_rate,
    iteration,
    loss_scale,
    report_memory_flag,
    skipped_iter,
    grad_norm,
    params_norm,
    num_zeros_in_grad,
    max_attention_logit,
    pg_collection=None,
    is_first_iteration=False,
    seqlen_squared_sum_in_batch=None,
    total_real_tokens_in_batch=None,
):
    """Log training information such as losses, timing, ...."""
    args = get_args()
    writer = get_tensorboard_writer()
    wandb_writer = get_wandb_writer()

    total_loss_dict["advanced iterations"] = total_loss_dict.get("advanced iterations", 0) + (not skipped_iter)
    for key in loss_dict:
        total_loss_dict[key] = total_loss_dict.get(key, torch.tensor([0.0])) + loss_dict[key]
    if learning_rate is None and args.freeze_all_layers:
        learning_rate = 0.0

    if writer and (iteration % args.tensorboard_log_interval == 0):
        if wandb_writer:
            wandb_writer.log({"samples vs steps": args.consumed_train_samples}, iteration)
        if learning_rate is not None:
            writer.add_scalar("learning-rate", learning_rate, iteration)
            if wandb_writer:
                wandb_writer.log({"learning-rate": learning_rate}, iteration)
        writer.add_scalar("batch-size", args.global_batch_size, iteration)
        if wandb_writer:
            wandb_writer.log({"batch-size": args.global_batch_size}, iteration)
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
        if args.log_max_attention_logit:
            writer.add_scalar("max_attention_logit", max_attention_logit, iteration)
            if wandb_writer:
                wandb_writer.log({"max_attention_logit": max_attention_logit}, iteration)

    if iteration % args.log_interval == 0:
        log_string = f" iteration {iteration:8d}/{args.train_iters:8d} |"
        if learning_rate is not None:
            log_string += f" learning rate: {learning_rate:.6E} |"
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
    """One optimizer step; returns (loss_dict, skipped_iter, ..., grad_norm, num_zeros, max_attention_logit)."""
    args = get_args()
    inputs, targets = batch
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
    num_zeros = int(sum((p.grad == 0).sum() for p in model.parameters()))
    optimizer.step()
    loss_dict = {"lm loss": loss.detach()} if is_pipeline_last_stage(args) else {}
    max_attention_logit = float(loss.detach()) * 10.0 if args.log_max_attention_logit else None
    return loss_dict, 0, False, False, 0, grad_norm, num_zeros, max_attention_logit


def train(model, optimizer, batches):
    """The part of Megatron's ``train()`` loop that leads to ``training_log``."""
    args = get_args()
    iteration = args.iteration
    total_loss_dict = {}
    report_memory_flag = True
    is_first_iteration = True
    while iteration < args.train_iters:
        (loss_dict, skipped_iter, should_checkpoint, should_exit, exit_code, grad_norm,
         num_zeros_in_grad, max_attention_logit) = train_step(model, optimizer, batches[iteration])
        iteration += 1
        args.consumed_train_samples += args.global_batch_size
        loss_scale = optimizer.get_loss_scale().item()
        params_norm = None
        if args.log_params_norm:
            params_norm = float(torch.norm(torch.stack([p.detach().norm() for p in model.parameters()])))
        learning_rate = optimizer.param_groups[0]["lr"] if optimizer is not None else None
        report_memory_flag = training_log(
            loss_dict,
            total_loss_dict,
            learning_rate,
            iteration,
            loss_scale,
            report_memory_flag,
            skipped_iter,
            grad_norm,
            params_norm,
            num_zeros_in_grad,
            max_attention_logit,
            pg_collection=None,
            is_first_iteration=is_first_iteration,
            seqlen_squared_sum_in_batch=None,
            total_real_tokens_in_batch=None,
        )
        is_first_iteration = False
    return iteration
