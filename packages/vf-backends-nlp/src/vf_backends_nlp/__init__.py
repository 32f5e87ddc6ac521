"""VectorFit backend for Hugging Face transformers.

Declares, per architecture family (BERT, RoBERTa, GPT-2, Llama...), which modules play the roles
``q, k, v, o, f1, f2``, so ``get_vectorfit_model(model, VectorFitConfig())`` needs no module names.

Example:
    >>> from vf_backends_nlp.families import FAMILIES
    >>> "bert" in {f.name for f in FAMILIES}
    True
"""

__version__ = "0.1.0"

from .families import FAMILIES

__all__ = ["FAMILIES", "__version__"]
