"""Image data: files, sources (folder, demo, paired, patch store), training patches, eval sets.

Contract of this layer: a ``DatasetSpec`` (resweep.config) becomes an ``ImageSource``
(``build_source``); ``TrainPatchDataset`` yields aligned LQ/GT crops (plus method extras) keyed
by ``(image, seed)``; ``build_eval_set`` gives whole images with a fixed degradation. Images
are float ``(3, H, W)`` in [0, 1]. Knows nothing of models, methods or Ray.
"""

from resweep.data.datasets import (
    EvalItem,
    EvalSet,
    TrainPatchDataset,
    augment_aligned,
    build_eval_set,
    build_train_dataset,
    crop_aligned,
    eval_seed,
    mod_crop,
    random_crop_params,
)
from resweep.data.images import IMAGE_EXTENSIONS, image_size, list_images, read_image
from resweep.data.patch_store import PatchStoreReader, prepare_patch_store
from resweep.data.sources import (
    DemoSource,
    FolderSource,
    ImageSource,
    PairedSource,
    PatchStoreSource,
    build_source,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DemoSource",
    "EvalItem",
    "EvalSet",
    "FolderSource",
    "ImageSource",
    "PairedSource",
    "PatchStoreReader",
    "PatchStoreSource",
    "TrainPatchDataset",
    "augment_aligned",
    "build_eval_set",
    "build_source",
    "build_train_dataset",
    "crop_aligned",
    "eval_seed",
    "image_size",
    "list_images",
    "mod_crop",
    "prepare_patch_store",
    "random_crop_params",
    "read_image",
]
