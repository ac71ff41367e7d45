"""Stand-in for the part of ``megatron.core.optimizer`` the training loop uses: an optimizer
with ``param_groups`` (``lr``), ``zero_grad()``, ``step()`` and ``get_loss_scale()`` (a tensor,
as ``MegatronOptimizer`` returns; ``train()`` calls ``.item()`` on it).  Plain SGD, without
``torch.optim`` (whose first use imports torch._dynamo, seconds per test process)."""

import torch


class FP32Optimizer:
    def __init__(self, params, lr):
        self.param_groups = [{"params": list(params), "lr": lr}]
        self.is_stub_optimizer = False

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])

    def get_loss_scale(self):
        return torch.tensor(1.0)
