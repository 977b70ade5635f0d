"""Names of the files a run writes its weights to; torch-free, so that the stages and the
analysis can name them without importing torch."""

CHECKPOINT_FILE = "checkpoint.pt"  # everything needed to continue a run (resweep.engine.checkpoint)
WEIGHTS_FILE = "weights.pt"  # model weights alone (a ``train`` stage's artifact)
