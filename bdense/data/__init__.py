"""Data sets (digits, MNIST, Fashion-MNIST, folders, npz, CIFAR-10 batches), their fetchers and image output."""

from bdense.data.datasets import SPECS, ImageData, dataset_info, load_dataset
from bdense.data.fetch import cache_dir, fetch
from bdense.data.images import save_grid, save_npz, to_uint8

__all__ = ["SPECS", "ImageData", "cache_dir", "dataset_info", "fetch", "load_dataset", "save_grid", "save_npz", "to_uint8"]
