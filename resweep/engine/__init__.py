"""The training engine: plain PyTorch, no Ray, no knowledge of any particular method.

Contract of this layer: ``Trainer(config, world=, reporter=, resume_state=, artifacts=)``
builds task, data, model, optimiser (``optim.OPTIMIZERS``) and the enabled methods from an
``ExperimentConfig``, trains (DDP when a process group exists), evaluates whole images and
hands metrics + checkpoint state to a ``Reporter``. Artifacts a config declares (stages) are
given by the caller (a study trial) or made by the Trainer itself through
``resweep.stages.prepare_local``. Checkpoints load with ``weights_only=True``.
"""
