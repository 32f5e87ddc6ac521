"""Test helpers for VectorFit backends and plugins: the shared family contract.

Needs pytest (``pip install vf-core[test]``); nothing in vf-core imports this package. A backend's
``tests/test_contract.py`` is just::

    from vf_core.testing import FamilyContract

    class TestMyFamilies(FamilyContract):
        backend = "my-backend"

and every family the backend declares (now or later) runs the whole battery; see
:mod:`vf_core.testing.contract`.
"""

from .contract import (
    FAMILY_ENV,
    FamilyContract,
    block_of,
    expected_blocks,
    output_tensor,
    relative_error,
    selected_families,
)

__all__ = ["FamilyContract", "FAMILY_ENV", "selected_families", "output_tensor", "expected_blocks", "block_of",
           "relative_error"]
