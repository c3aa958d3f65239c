"""tfmnist: a low-level TensorFlow training system for the MNIST family of datasets."""

__version__ = "0.1.0"
