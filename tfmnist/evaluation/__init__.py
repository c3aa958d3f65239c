"""Evaluation: the report of a model on a split, robustness sweeps, figures,
calibration, and the training curves read back from TensorBoard."""
