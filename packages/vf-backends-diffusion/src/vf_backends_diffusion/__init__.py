"""VectorFit backend for diffusers.

Declares, per architecture family (UNet2DConditionModel, UNet2DModel, Transformer2DModel, DiT, SD3, Flux), which
modules play the roles ``q, k, v, o, f1, f2``, so ``get_vectorfit_model(model, VectorFitConfig())`` needs no module
names.
diffusers is an optional extra (``pip install vf-backends-diffusion[diffusers]``) imported only when a model is
built.

Example:
    >>> from vf_backends_diffusion.families import FAMILIES
    >>> "unet2d-condition" in {f.name for f in FAMILIES}
    True
"""

__version__ = "0.1.0"

from .families import FAMILIES

__all__ = ["FAMILIES", "__version__"]
