"""Stand-in for AMD-AGI/Primus (``primus``), release **v26.5.1** / main fd1eeabb (2026-11).

Our own minimal re-implementation (not Primus's code) of what the exporter relies on:
``primus.core.runtime.train_runtime.PrimusRuntime`` and its call order
(configuration -> distributed context (rank, world_size) -> ``_initialize_adapter`` ->
``_initialize_trainer`` (``_run_phase_patches`` -> ``_get_backend_version``) -> trainer
lifecycle with setup / before_train / after_train patch phases), the backend adapters for
``megatron`` and ``torchtitan``, and Primus's own wrapper of Megatron's ``training_log``
(``_primus_training_log_print_rank_wrapper``, from
``primus/backends/megatron/patches/training_log/print_rank_last_patches.py``).
"""

__version__ = "26.5"
