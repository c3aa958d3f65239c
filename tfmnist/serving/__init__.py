"""Serving trained models: predictors over exported SavedModels, one model or an
ensemble, and checkpoints exported in process."""
