"""The model registry: `create(name, num_classes)` builds any tfmnist model.

Every model is a subclassed keras.Model whose `call(images, training, noise)`
takes normalised float images [B, 28, 28, 1] and returns float32 logits
[B, num_classes]; `noise` (layers.Noise) feeds its dropout while training.
To add a model, write the class, decorate it with `@register("name")`, and
import its module in `_load()` below.
"""

_REGISTRY = {}


def register(name):
  """Class decorator adding a model to the registry under `name`."""

  def wrap(cls):
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls

  return wrap


def names():
  _load()
  return sorted(_REGISTRY)


def create(name, num_classes, **kwargs):
  """Builds the registered model `name` (its variables are made on first call)."""
  _load()
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name](num_classes=num_classes, **kwargs)


def _load():
  # Importing the modules registers their models.
  from tfmnist.models import convnets, ensemble, resnet  # pylint: disable=g-import-not-at-top,unused-import
