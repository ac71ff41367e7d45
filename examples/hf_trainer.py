"""Hugging Face ``Trainer`` on CPU: a tiny GPT-2 built from a config, random tokens.

    python examples/hf_trainer.py [--report-to wandb|none] [--steps 30] [--explicit]

Nothing here mentions Lens (unless ``--explicit``): the installed exporter adds a
``LensTrainerCallback`` when the ``Trainer`` is constructed.

- ``--report-to wandb``: Lens mirrors the W&B stream (``train/loss`` ... stepped by
  ``train/global_step``; the final ``train_runtime`` etc. that HF writes only to the W&B
  summary included).
- ``--report-to none``: no W&B; the callback reports every ``Trainer.log`` itself (data
  source ``transformers``, step = ``state.global_step``).
- ``--explicit``: ``Trainer(callbacks=[LensTrainerCallback()])``; still exactly one.
"""

import argparse
import os
import tempfile


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-to", choices=("wandb", "none"), default="wandb")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--explicit", action="store_true", help="pass LensTrainerCallback yourself")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_PROJECT", "lens-hf-example")

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    tokens = torch.randint(0, 128, (256, 32))
    train = [{"input_ids": row, "labels": row} for row in tokens[:224]]
    evaluation = [{"input_ids": row, "labels": row} for row in tokens[224:]]
    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="lens-hf-"), max_steps=args.steps, per_device_train_batch_size=8,
        logging_steps=5, eval_strategy="steps", eval_steps=10, save_strategy="no", use_cpu=True,
        report_to=[] if args.report_to == "none" else ["wandb"], disable_tqdm=True)
    callbacks = None
    if args.explicit:
        from primus_lens_wandb_exporter import LensTrainerCallback

        callbacks = [LensTrainerCallback()]
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                      callbacks=callbacks)
    trainer.train()
    names = [type(cb).__name__ for cb in trainer.callback_handler.callbacks]
    print(f"done: {trainer.state.global_step} steps; callbacks: {names}")


if __name__ == "__main__":
    main()
