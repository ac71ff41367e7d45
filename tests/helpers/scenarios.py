"""Programs shared by more than one test module.

``SCENARIO``: every ``wandb.log`` call shape the live-capture tests use (explicit steps,
``commit=False``, numpy and torch scalars, nested dicts, non-finite values, text, lists, a
summary-only key); run live (tests/core/test_wandb_capture.py) and imported from the .wandb
file it writes (tests/import_wandb/test_import_wandb.py).
"""

SCENARIO = """
import math, sys, wandb, numpy as np, torch
run = wandb.init(project="proj", name="exp-1", config={"lr": 0.001, "batch_size": 32}, tags=["t1"])
wandb.log({"loss": 1.0, "accuracy": 0.1})                 # step 0
run.log({"loss": 0.9})                                      # step 1
run.log({"part_a": 1.0}, commit=False)                      # step 2, row kept open
run.log({"part_b": 2.0})                                    # step 2, committed
run.log({"explicit": 5.0}, step=10)                         # jumps to step 10
run.log({"explicit2": 6.0}, step=10)                        # same row
run.log({"after": 7.0})                                     # step 10, committed
run.log({"stale": 1.0}, step=3)                             # wandb drops it: so does Lens
run.log({"np32": np.float32(0.5), "np_int": np.int64(3), "t0": torch.tensor(2.5),
         "nested": {"x": 1, "y": {"z": 2.0}}, "nan": float("nan"), "inf": math.inf, "ninf": -math.inf,
         "text": "running", "lst": [1, 2], "flag": True, "none": None})   # step 11
acc = torch.tensor(1.0)
run.log({"accum": acc})                                     # step 12: value at log time is 1.0
acc.add_(100.0)
inner = {"v": 1.0}
run.log({"grp": inner})                                     # step 13: nested dict changed after log
inner["v"] = 99.0
for i in range(3):
    run.log({"loss": 0.5 - i * 0.1, "accuracy": 0.5 + i * 0.1})   # steps 14..16
run.summary["final_metric"] = 42.0                          # summary-only key
run.summary["loss"] = 0.01                                  # summary of a history key: not a new point
run.config.update({"extra": 1})
wandb.finish()
"""
