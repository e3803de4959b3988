"""Checkpoints: reading untrusted ones, writing them safely, and what they decide.

``io`` (safe reading of local files and URLs, ``CheckpointError``, finiteness and size
checks), ``hparams`` (which hyper-parameters a checkpoint decides, and their bounds),
``cost`` (what a checkpoint's model asks of the machine, compared with its tensors before
they are read), ``names`` (``--ckpt_path last`` / ``best``), ``categories`` (a detector's
category ids against the data's), ``run_dirs`` (where an evaluation of a checkpoint
writes) and ``model_checkpoint`` (``tasks.ModelCheckpoint``, the callback that writes them).
"""
