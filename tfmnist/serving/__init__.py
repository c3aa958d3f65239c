"""Serving trained models: predictors over exported SavedModels (one model or an
ensemble, checkpoints exported in process), LiteRT files of an export, and
TensorFlow Serving's REST API with a drawing page over HTTP."""
