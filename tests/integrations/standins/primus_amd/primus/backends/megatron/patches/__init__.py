"""Stand-in for Primus's Megatron ``training_log`` patch
(``primus/backends/megatron/patches/training_log/print_rank_last_patches.py``, v26.5.1):
wraps ``megatron.training.training.training_log`` with ``primus_training_log(*args,
**kwargs)`` (no functools.wraps), which swaps ``print_rank_last`` for an enriching one
for the duration of the call; marks itself ``_primus_training_log_print_rank_wrapper``
and does not wrap twice."""

from primus.core.patches import get_args, register_patch


@register_patch("megatron.training_log.print_rank_last", backend="megatron", phase="before_train")
def patch_training_log_print_rank_last(ctx):
    import megatron.training.training as megatron_training

    config = get_args(ctx)
    if not (getattr(config, "log_throughput", False) and getattr(config, "use_rocm_mem_info", False)):
        return
    original_training_log = megatron_training.training_log
    if getattr(original_training_log, "_primus_training_log_print_rank_wrapper", False):
        return
    original_print_rank_last = megatron_training.print_rank_last

    def primus_print_rank_last(log_string):
        original_print_rank_last(log_string + " [Primus] rocm mem usage/free/total (GB): 1.00/63.00/64.00 |")

    def primus_training_log(*args, **kwargs):
        original_print = megatron_training.print_rank_last
        try:
            megatron_training.print_rank_last = primus_print_rank_last
            return original_training_log(*args, **kwargs)
        finally:
            megatron_training.print_rank_last = original_print

    setattr(primus_training_log, "_primus_training_log_print_rank_wrapper", True)
    megatron_training.training_log = primus_training_log
    print("[Patch:megatron.training_log] Wrapped training_log with Primus print_rank_last hook", flush=True)
