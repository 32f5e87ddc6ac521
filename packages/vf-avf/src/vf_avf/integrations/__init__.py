"""Training integrations: the Hugging Face ``Trainer`` callback (:mod:`vf_avf.integrations.trainer`).

Paper: https://arxiv.org/abs/2503.19530. A plain PyTorch loop (DDP included) needs no integration, only
:class:`~vf_avf.VectorFreezer`::

    loss.backward()
    freezer.step(step)        # step = optimizer steps already taken
    optimizer.step()

Example:
    >>> import importlib.util
    >>> bool(importlib.util.find_spec("vf_avf.integrations.trainer"))
    True
"""
