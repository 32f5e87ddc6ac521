"""Extract the tiny configurations and inputs of diffusers' own model tests into ``diffusers_tiny.json``.

diffusers' test suite builds every denoiser from a tiny configuration (``get_init_dict()`` and ``get_dummy_inputs()``
of its ``...TesterConfig`` classes, or ``prepare_init_args_and_inputs_for_common()`` in the older unittest classes).
The sweep (``sweep.py``) reuses them instead of guessing 80 configurations: this script imports the test modules of a
diffusers checkout once and writes what they return, so the sweep needs only the installed diffusers.

Inputs are stored by description: a floating tensor whose values are not all integers as its shape (the sweep draws
it from a seeded normal), every other tensor (timesteps, ids, masks, position ids) with its values.

Usage (a checkout of https://github.com/huggingface/diffusers whose ``tests/`` matches the installed version)::

    python benchmarks/coverage/extract_diffusers.py /path/to/diffusers [--out benchmarks/coverage/diffusers_tiny.json]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import re
import subprocess
import sys
import traceback
import types
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).parent
_FOLDERS = ("tests/models/transformers", "tests/models/unets")
_DENOISER_PACKAGES = ("diffusers.models.transformers", "diffusers.models.unets")


def encode(value: Any) -> Any:
    """A JSON description of an input (tensors by shape, or by value where the values are integers)."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if value.is_floating_point() and not bool((value == value.round()).all()):
            return {"__tensor__": "randn", "shape": list(value.shape), "dtype": dtype}
        return {"__tensor__": "values", "shape": list(value.shape), "dtype": dtype,
                "values": value.flatten().tolist()}
    if isinstance(value, dict):
        return {"__dict__": {str(k): encode(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"__list__": [encode(v) for v in value], "tuple": isinstance(value, tuple)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot describe an input of type {type(value).__name__}")


def _plain(value: Any) -> Any:
    """The init dict as JSON (tuples as lists); raises TypeError on anything else."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"init argument of type {type(value).__name__}")


def _cases(module) -> list[tuple[str, Any, dict, dict]]:
    """``(test class, model class, init dict, inputs)`` of every tester config in ``module``."""
    out = []
    seen = set()
    for name, cls in vars(module).items():
        if not inspect.isclass(cls) or cls.__module__ != module.__name__:
            continue
        try:
            if hasattr(cls, "get_init_dict") and hasattr(cls, "get_dummy_inputs"):
                if any(b.__name__.endswith("TesterConfig") and b is not cls and b.__module__ == module.__name__
                       for b in cls.__mro__[1:]):
                    continue  # a test class built on a config of this module: the config itself is listed
                obj = cls.__new__(cls)
                model_class, init, inputs = obj.model_class, obj.get_init_dict(), obj.get_dummy_inputs()
            elif hasattr(cls, "prepare_init_args_and_inputs_for_common") and getattr(cls, "model_class", None):
                obj = cls("__init__") if issubclass(cls, __import__("unittest").TestCase) else cls()
                init, inputs = obj.prepare_init_args_and_inputs_for_common()
                model_class = cls.model_class
            else:
                continue
        except Exception as exc:  # a config that needs something absent here
            out.append((name, None, {}, {"__error__": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}))
            continue
        key = (model_class.__name__, json.dumps(_plain(init), sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        out.append((name, model_class, init, inputs))
    return out


def _stub_parameterized() -> None:
    """A stand-in for the ``parameterized`` test helper where it is not installed (its decorators only)."""
    if importlib.util.find_spec("parameterized") is not None:
        return

    class parameterized:  # noqa: N801 (the package's name)
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, func):
            return func

        @staticmethod
        def expand(*args, **kwargs):
            return lambda func: func

    stub = types.ModuleType("parameterized")
    stub.parameterized = parameterized
    stub.param = lambda *args, **kwargs: None
    sys.modules["parameterized"] = stub


def _import(modname: str, attempts: int = 4):
    """Import a test module, standing in for missing test-only helpers (``requests_mock``...) it imports."""
    for _ in range(attempts):
        try:
            return importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not missing or missing.split(".")[0] in ("diffusers", "torch", "tests") or missing in sys.modules:
                raise
            stub = types.ModuleType(missing)
            stub.__getattr__ = lambda attr: (lambda *a, **k: None)  # type: ignore[attr-defined]
            sys.modules[missing] = stub
    return importlib.import_module(modname)


class _Stop(Exception):
    pass


def _pipeline_cases(module, wanted: set) -> list[tuple[str, Any, dict, dict]]:
    """For denoisers without a model test: run the pipeline tests' dummy pipeline until its denoiser (one of the
    classes in ``wanted``) is first called, and keep that call's arguments and the denoiser's configuration."""
    out = []
    for name, cls in vars(module).items():
        if not (inspect.isclass(cls) and cls.__module__ == module.__name__ and hasattr(cls, "get_dummy_components")
                and getattr(cls, "pipeline_class", None) is not None):
            continue
        try:
            obj = cls("__init__") if issubclass(cls, __import__("unittest").TestCase) else cls()
            components = obj.get_dummy_components()
            denoisers = {k: v for k, v in components.items() if type(v).__name__ in wanted}
            if not denoisers:
                continue
            key, denoiser = next(iter(denoisers.items()))
            captured: dict = {}

            def hook(module_, args, kwargs, captured=captured):
                params = list(inspect.signature(module_.forward).parameters)
                captured.update({params[i]: a for i, a in enumerate(args)}, **kwargs)
                raise _Stop

            denoiser.register_forward_pre_hook(hook, with_kwargs=True)
            pipe = cls.pipeline_class(**components)
            try:
                pipe(**obj.get_dummy_inputs("cpu"))
            except _Stop:
                pass
            config = {k: v for k, v in dict(denoiser.config).items() if not k.startswith("_")}
            out.append((f"{name}.{key}", type(denoiser), {"__from_config__": config}, captured))
            wanted.discard(type(denoiser).__name__)
        except Exception as exc:
            out.append((name, None, {}, {"__error__": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                                                      if str(exc) else type(exc).__name__}))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a diffusers checkout (its tests/ folder is imported)")
    parser.add_argument("--out", type=Path, default=HERE / "diffusers_tiny.json")
    parser.add_argument("--commit", help="the checkout's commit, where it is not a git work tree")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.checkout))
    commit = args.commit
    if commit is None:
        try:
            commit = subprocess.run(["git", "-C", str(args.checkout), "rev-parse", "HEAD"], capture_output=True,
                                    text=True).stdout.strip() or None
        except OSError:
            pass
    _stub_parameterized()
    import diffusers

    records, errors = [], []
    for folder in _FOLDERS:
        for path in sorted((args.checkout / folder).glob("test_*.py")):
            modname = ".".join(path.relative_to(args.checkout).with_suffix("").parts)
            try:
                module = _import(modname)
            except Exception as exc:
                errors.append({"source": str(path.relative_to(args.checkout)),
                               "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
                continue
            for test_class, model_class, init, inputs in _cases(module):
                source = str(path.relative_to(args.checkout))
                if model_class is None:
                    errors.append({"source": source, "test_class": test_class, "error": inputs["__error__"]})
                    continue
                try:
                    records.append({"class": model_class.__name__, "variant": test_class, "source": source,
                                    "init": _plain(init), "inputs": encode(inputs)})
                except TypeError as exc:
                    errors.append({"source": source, "test_class": test_class, "error": str(exc)})
    # denoisers without a model test: from the dummy pipelines of the pipeline tests that build them
    have = {r["class"] for r in records}
    denoisers = {name for name in dir(diffusers) if inspect.isclass(getattr(diffusers, name, None))
                 and getattr(diffusers, name).__module__.startswith(_DENOISER_PACKAGES)}
    wanted = denoisers - have
    for path in sorted((args.checkout / "tests/pipelines").rglob("test_*.py")):
        if not wanted:
            break
        text = path.read_text(errors="ignore")
        if not any(re.search(rf"(?<![\w.]){c}\(", text) for c in wanted):
            continue
        modname = ".".join(path.relative_to(args.checkout).with_suffix("").parts)
        try:
            module = _import(modname)
        except Exception as exc:
            errors.append({"source": str(path.relative_to(args.checkout)),
                           "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
            continue
        for test_class, model_class, init, inputs in _pipeline_cases(module, wanted):
            source = str(path.relative_to(args.checkout))
            if model_class is None:
                errors.append({"source": source, "test_class": test_class, "error": inputs["__error__"]})
                continue
            try:
                records.append({"class": model_class.__name__, "variant": test_class, "source": source,
                                "init": _plain(init), "inputs": encode(inputs)})
            except TypeError as exc:
                errors.append({"source": source, "test_class": test_class, "error": str(exc)})
    payload = {"diffusers": diffusers.__version__, "tests_commit": commit, "configs": records, "errors": errors}
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"{len(records)} configurations of {len({r['class'] for r in records})} classes, {len(errors)} errors"
          f" -> {args.out}")
    for e in errors:
        print("  error:", e)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
