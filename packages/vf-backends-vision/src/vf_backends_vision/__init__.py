"""VectorFit backend for timm.

Declares, per architecture family (ViT, DeiT, BEiT, Swin, ConvNeXt, EfficientNet/MobileNet), which modules play
the roles ``q, k, v, o, f1, f2``, so ``get_vectorfit_model(model, VectorFitConfig())`` needs no module names.
timm is an optional extra (``pip install vf-backends-vision[timm]``) imported only when a model is built.

Example:
    >>> from vf_backends_vision.families import FAMILIES
    >>> "timm-vit" in {f.name for f in FAMILIES}
    True
"""

__version__ = "0.1.0"

from .families import FAMILIES, timm_architecture

__all__ = ["FAMILIES", "timm_architecture", "__version__"]
