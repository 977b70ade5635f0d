"""Names of the files a run and a ``train`` stage write, read by layers from the methods
(a teacher's run folder) to the analysis. Torch-free. The files of a study folder are named in
:mod:`resweep.study.layout`."""

CHECKPOINT_FILE = "checkpoint.pt"  # everything needed to continue a run (resweep.engine.checkpoint)
WEIGHTS_FILE = "weights.pt"  # model weights alone (a ``train`` stage's artifact)
CONFIG_FILE = "config.yaml"  # the experiment config a ``train`` stage trained
METRICS_FILE = "metrics.json"  # a ``train`` stage's final metrics
