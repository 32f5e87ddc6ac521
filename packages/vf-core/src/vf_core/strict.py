"""A pydantic base class whose validation errors are :class:`~vf_core.errors.ConfigError` naming the field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

__all__ = ["StrictModel", "config_error_from"]


def config_error_from(exc: ValidationError, model_name: str) -> ConfigError:
    """Turn pydantic's ``ValidationError`` into a :class:`ConfigError` listing each bad field."""
    lines, fields = [], []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "<config>"
        fields.append(field)
        if err.get("type") == "extra_forbidden":
            msg = "unknown field; check its spelling against the documented fields"
        else:
            msg = err.get("msg", "invalid value")
        given = err.get("input")
        shown = repr(given) if not isinstance(given, dict) else "{...}"
        lines.append(f"  {field}: {msg} (got {shown[:80]})")
    return ConfigError(f"invalid {model_name}:\n" + "\n".join(lines), fields=tuple(fields))


class StrictModel(BaseModel):
    """Rejects unknown fields, validates on assignment, and raises :class:`ConfigError`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error_from(exc, type(self).__name__) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any):  # type: ignore[override]
        if isinstance(obj, dict) and not args and not kwargs:
            return cls(**obj)  # one validation path, one error that names the field
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise config_error_from(exc, cls.__name__) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise config_error_from(exc, type(self).__name__) from None
