"""The exceptions VectorFit raises.

Every error derives from :class:`VectorFitError`, so ``except VectorFitError`` catches them all, and most
also derive from the matching built-in (``ValueError``, ``TypeError``, ``KeyError``) so that generic code
keeps working. Each message says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "VectorFitError",
    "ConfigError",
    "TargetError",
    "UnknownFamilyError",
    "InferenceError",
    "UnsupportedLayerError",
    "NonFiniteWeightError",
    "TiedWeightError",
    "AdapterError",
    "AdapterMismatchError",
    "AdapterFormatError",
    "UnknownAdapterError",
    "IncompatibleAdapterError",
    "AdapterUsageError",
    "ExportError",
    "PluginError",
    "PolicyNotFoundError",
    "TaskError",
    "DataWarning",
]


class VectorFitError(Exception):
    """Base class of every error raised by VectorFit."""


class ConfigError(VectorFitError, ValueError):
    """A configuration value is missing, unknown or invalid; the message names the field."""

    def __init__(self, message: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class TargetError(VectorFitError, ValueError):
    """The modules to decompose could not be found or used."""


class UnknownFamilyError(TargetError):
    """No installed backend recognises the model's architecture family."""


class InferenceError(TargetError):
    """No backend declares the model and its roles could not be inferred from its structure without doubt: a module
    that could play two roles, an attention or MLP with some of its projections missing, or blocks of one stack that
    differ. The message says what was found and how to name the modules with ``target_modules``."""


class UnsupportedLayerError(TargetError, TypeError):
    """A targeted module is of a type that cannot be decomposed."""


class NonFiniteWeightError(TargetError):
    """A targeted weight holds NaN or infinite values."""


class TiedWeightError(TargetError):
    """A targeted weight is shared with another module (tied weights) and would silently diverge."""


class AdapterError(VectorFitError):
    """Base class of the errors met while loading a saved adapter."""


class AdapterMismatchError(AdapterError, ValueError):
    """A saved adapter does not belong to the base model it is applied to."""


class AdapterFormatError(AdapterError, ValueError):
    """A saved adapter is missing, truncated, corrupted, of an unknown format version, or not safetensors."""


class UnknownAdapterError(AdapterError, KeyError):
    """No adapter of that name is loaded in the model (``set_adapter``, ``adapter_names=``, ``delete_adapter``...);
    the message lists the adapters there are."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class IncompatibleAdapterError(AdapterError, ValueError):
    """An adapter (added or loaded) would need another decomposition of the base than the model's adapters share:
    other targets, method, rank, pattern or trained kinds. Such an adapter needs its own model."""


class AdapterUsageError(AdapterError, ValueError):
    """An adapter operation used the wrong way: ``adapter_names`` of the wrong length, a mixed-adapter batch in
    training mode or on routed experts, deleting the only adapter, a name taken twice."""


class ExportError(VectorFitError, ValueError):
    """An adapter cannot be written in the requested format (:func:`vf_core.export.save_as_lora`): a layer type the
    format has no place for, or nothing trained to export."""


class PluginError(VectorFitError, RuntimeError):
    """A plugin is broken: a bad hook, a duplicate name, or a declaration that does not validate."""


class PolicyNotFoundError(PluginError, KeyError):
    """No installed plugin provides the requested freezing policy."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class TaskError(VectorFitError, ValueError):
    """Bad input to a training task or to the ``vectorfit`` command: a model, data or option it cannot use. The
    message is one line that says what is wrong and what to do; the command prints it and exits with status 2."""


class DataWarning(UserWarning):
    """Something about the data the user should know, though the run goes on (examples cut to ``--max-length``,
    skipped rows): the ``vectorfit`` command shows it as one ``vectorfit: warning:`` line even when it silences the
    libraries' other warnings."""
