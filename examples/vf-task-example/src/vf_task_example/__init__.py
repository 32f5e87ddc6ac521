"""An example VectorFit training task distributed as a plugin: ``toy-regression`` (see :mod:`.task`)."""

__version__ = "0.1.0"
