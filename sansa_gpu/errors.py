"""Exceptions of the package (a module of their own, so every stage can import them one way)."""

from __future__ import annotations


class GPUOutOfMemory(MemoryError):
    """A GPU stage ran out of device memory even after retrying in smaller pieces (the caller
    continues on the CPU with a warning)."""


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit`` (or ``load``). Both a ValueError
    and an AttributeError, as scikit-learn's ``NotFittedError``, so code written for either catches it."""
