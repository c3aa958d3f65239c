"""The augmentation flags, shared by the entry points that take them.

Only entry points import this module (it defines absl flags); they call
`augment_config()` once to turn the flags into an AugmentConfig. It does
not import TensorFlow (see startup.py), so the defaults that are not "off"
are written out here; tests/cli/test_startup.py checks them against
AugmentConfig's.
"""

from absl import flags

# AugmentConfig's defaults of the settings whose default is not 0 or False.
DEFAULTS = {"elastic_sigma": 4.0, "erase_area": (0.02, 0.2), "noise_probability": 1.0,
            "blur_sigma": 1.0}

_ROTATION = flags.DEFINE_float("rotation_degrees", 0.0, "Rotation drawn from [-r, r] degrees.")
_ZOOM = flags.DEFINE_float("zoom", 0.0, "Scale drawn per axis from [1 - z, 1 + z] (fraction).")
_SHIFT_X = flags.DEFINE_float("shift_x", 0.0, "Horizontal shift, fraction of the width.")
_SHIFT_Y = flags.DEFINE_float("shift_y", 0.0, "Vertical shift, fraction of the height.")
_SHEAR = flags.DEFINE_float("shear_degrees", 0.0, "Shear drawn from [-s, s] degrees.")
_ELASTIC_ALPHA = flags.DEFINE_float(
    "elastic_alpha", 0.0, "Elastic distortion in pixels (Simard et al.: 34 with sigma 4); 0 off.")
_ELASTIC_SIGMA = flags.DEFINE_float(
    "elastic_sigma", DEFAULTS["elastic_sigma"], "Smoothing of the elastic field, in pixels.")
_ERASE_PROBABILITY = flags.DEFINE_float(
    "erase_probability", 0.0, "Chance that an image gets one erased rectangle.")
_ERASE_AREA = flags.DEFINE_list(
    "erase_area", [str(a) for a in DEFAULTS["erase_area"]],
    "min,max fraction of the image area erased.")
_NOISE = flags.DEFINE_float("noise_factor", 0.0, "Std of Gaussian noise on [0, 1] images.")
_NOISE_PROBABILITY = flags.DEFINE_float(
    "noise_probability", DEFAULTS["noise_probability"],
    "Chance that an image gets the Gaussian noise.")
_BLUR = flags.DEFINE_float(
    "blur_strength", 0.0, "Blur (t > 0) or sharpen (t < 0) by t drawn from [-s, s].")
_BLUR_SIGMA = flags.DEFINE_float(
    "blur_sigma", DEFAULTS["blur_sigma"], "Sigma of the blur, in pixels.")
_FLIP_H = flags.DEFINE_bool("flip_horizontal", False, "Mirror left-right half the time.")
_FLIP_V = flags.DEFINE_bool("flip_vertical", False, "Mirror top-bottom half the time.")
_FORCE_FLIPS = flags.DEFINE_bool("force_flips", False, "Allow flips on digit datasets.")


def augment_config():
  """The AugmentConfig of the flags; ValueError on a malformed --erase_area."""
  from tfmnist.data import augment  # pylint: disable=g-import-not-at-top
  try:
    erase_area = tuple(float(a) for a in _ERASE_AREA.value)
  except ValueError:
    raise ValueError(f"--erase_area must be two numbers, got {_ERASE_AREA.value}") from None
  if len(erase_area) != 2:
    raise ValueError(f"--erase_area must be two numbers min,max, got {_ERASE_AREA.value}")
  return augment.AugmentConfig(
      rotation_degrees=_ROTATION.value, zoom=_ZOOM.value, shift_x=_SHIFT_X.value,
      shift_y=_SHIFT_Y.value, shear_degrees=_SHEAR.value, elastic_alpha=_ELASTIC_ALPHA.value,
      elastic_sigma=_ELASTIC_SIGMA.value, erase_probability=_ERASE_PROBABILITY.value,
      erase_area=erase_area, noise_factor=_NOISE.value,
      noise_probability=_NOISE_PROBABILITY.value, blur_strength=_BLUR.value,
      blur_sigma=_BLUR_SIGMA.value, flip_horizontal=_FLIP_H.value,
      flip_vertical=_FLIP_V.value, force_flips=_FORCE_FLIPS.value)
