"""The training batches' keys and loader live in :mod:`resweep.data.sampler` (below the methods,
which draw batches too); this name stays for existing imports."""

from resweep.data.sampler import BatchKeySampler, batch_keys, epoch_permutation, train_loader

__all__ = ["BatchKeySampler", "batch_keys", "epoch_permutation", "train_loader"]
