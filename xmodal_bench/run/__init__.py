"""One benchmark run: its request, folders, data, trainer, callbacks, checkpoints, warm start, wandb."""
