"""Training: the config, strategy, traced steps, checkpoints, the outer loop, optimizers,
schedules, TensorBoard writers and the SavedModel export.

`python -m tfmnist.train` runs the command line (tfmnist/cli/train.py).
"""
