"""VectorFit's test matrix.

    nox -l                         # list the matrix
    nox -s "tests(nlp)"            # one package, in its own venv, with only its own extras
    nox -s integration             # every package and extra together
    nox -s "family(llama)"         # the shared family contract for one model family only
    nox -R -s "tests(nlp)"         # reuse the venv and skip the installs (fast re-runs)
    nox -s "tests(nlp)" -- -k bert # arguments after -- go to pytest

Sessions:

- ``tests(<package>)``, one per folder under ``packages/`` (``core``, ``avf``, ``nlp``, ``vision``,
  ``diffusion``): a fresh venv with torch, vf-core from the local path, then that package with its ``test``
  extra only, so a backend that imports another backend's library fails here.
- ``integration``: every package with every extra, plus the application ``vectorfit[dev]`` (the root
  distribution, ``src/vectorfit``), then each package's tests and the repository-wide ``tests/`` (the command
  over every task, the import contracts, the docs and this matrix against the registry).
- ``family(<name>)``, one per model family the backends declare: the contract tests
  (:mod:`vf_core.testing`) of that family only, in a venv shared by all the families of one backend
  (``.nox/family-env-<package>``, created on first use), so a plugin author runs a new family through the
  same battery with ``nox -s "family(<name>)"``.

The family names are read from the backends' source (every ``Family(name="...", ...)`` call, parsed with
:mod:`ast`), so listing the sessions needs neither torch nor any model library; ``tests/test_repository.py``
checks that this list equals the families the installed backends register.

torch is pinned to the pair on this project's machines' local wheel folder (``torch==2.14.1 torchvision==0.29.1``):
an unpinned torch would download several GB. Venvs are reused when they exist (``reuse_venv = "yes"``);
``nox -R`` also skips the installs.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path
from typing import Iterable

import nox
from nox.command import CommandFailed

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent
PACKAGES_DIR = ROOT / "packages"
TORCH = ("torch==2.14.1", "torchvision==0.29.1")

nox.options.reuse_venv = "yes"


def _key(dist: str) -> str:
    """Short session key of a distribution: vf-core -> core, vf-avf -> avf, vf-backends-nlp -> nlp."""
    for prefix in ("vf-backends-", "vf-"):
        if dist.startswith(prefix):
            return dist[len(prefix):]
    return dist


def packages() -> dict[str, str]:
    """Session key -> package folder name, for every ``packages/*/pyproject.toml``; vf-core first."""
    found = sorted(p.parent.name for p in PACKAGES_DIR.glob("*/pyproject.toml"))
    found.sort(key=lambda d: (d != "vf-core", d != "vf-avf", d))
    return {_key(d): d for d in found}


def _family_names(path: Path) -> list[str]:
    """The ``name=`` of every ``Family(...)`` call with a literal name in a Python file."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError):
        return []
    names = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if called != "Family":
            continue
        for kw in node.keywords:
            if kw.arg == "name" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                names.append(kw.value.value)
    return names


def declared_families() -> dict[str, str]:
    """Family name -> session key of the package that declares it, read statically from ``packages/*/src``."""
    out: dict[str, str] = {}
    for key, dist in packages().items():
        for path in sorted((PACKAGES_DIR / dist / "src").rglob("*.py")):
            for name in _family_names(path):
                out.setdefault(name, key)
    return out


PACKAGES = packages()
FAMILIES = declared_families()
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(folder: str) -> dict:
    return tomllib.loads((PACKAGES_DIR / folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def local_requirements(folder: str, extras: Iterable[str]) -> dict[str, set[str]]:
    """Package folder -> extras, for ``folder[extras]`` and every package of this repository it requires
    (through its dependencies or those extras, transitively), so that they are installed from the local
    paths in one pip call rather than looked up on an index."""
    local = {_norm(_project(f)["name"]): f for f in PACKAGES.values()}
    wanted: dict[str, set[str]] = {folder: set(extras)}
    todo = [folder]
    while todo:
        current = todo.pop()
        project = _project(current)
        requirements = list(project.get("dependencies", []))
        for extra in sorted(wanted[current]):
            requirements += project.get("optional-dependencies", {}).get(extra, [])
        for requirement in requirements:
            match = _REQUIREMENT.match(requirement)
            target = local.get(_norm(match.group(1))) if match else None
            if target is None:
                continue
            needed = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
            if target not in wanted or not needed <= wanted[target]:
                wanted.setdefault(target, set()).update(needed)
                todo.append(target)
    return wanted


def _editable_args(wanted: dict[str, set[str]]) -> list[str]:
    args: list[str] = []
    for folder in sorted(wanted, key=lambda f: f != "vf-core"):
        extras = ",".join(sorted(wanted[folder]))
        args += ["-e", f"packages/{folder}[{extras}]" if extras else f"packages/{folder}"]
    return args


# vf-avf's tests build an example plugin package with `pip install --no-build-isolation`: its build backend
# must be in the environment (vf-avf[test] does not declare it)
BUILD_TOOLS = ("hatchling>=1.21",)


def _install_package(session: nox.Session, key: str) -> None:
    session.install(*TORCH, *BUILD_TOOLS)
    session.install("-e", "packages/vf-core[test]")  # vf-core from the local path first
    if key != "core":
        session.install(*_editable_args(local_requirements(PACKAGES[key], ["test"])))


def _pytest(session: nox.Session, *paths: str, env: dict | None = None) -> None:
    # exit code 5 (no tests collected) is not a failure for a package that has no tests yet
    session.run("python", "-m", "pytest", *paths, *session.posargs, env=env or {}, success_codes=[0, 5])


@nox.session
@nox.parametrize("package", list(PACKAGES), ids=list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """One package in its own venv with only its own extras."""
    _install_package(session, package)
    session.run("python", "-c", "import vf_core.plugins as p; print('families:', sorted(p.list_families()))")
    _pytest(session, f"packages/{PACKAGES[package]}/tests")


@nox.session(default=False)
def integration(session: nox.Session) -> None:
    """Every package with every extra, and the application (the root distribution) with the dev tools."""
    session.install(*TORCH, *BUILD_TOOLS)
    session.install("-e", "packages/vf-core[test]")
    wanted: dict[str, set[str]] = {}
    for dist in PACKAGES.values():
        extras = set(_project(dist).get("optional-dependencies", {}))  # every extra of every package
        for folder, needed in local_requirements(dist, extras).items():
            wanted.setdefault(folder, set()).update(needed)
    session.install(*_editable_args(wanted))
    session.install("-e", ".[dev]")
    # one pytest process per package: each tests/ folder has its own conftest.py (a module named "conftest")
    failed = []
    for key, dist in PACKAGES.items():
        try:
            _pytest(session, f"packages/{dist}/tests")
        except CommandFailed:
            failed.append(key)
    try:
        _pytest(session, "tests")  # the command over every task, the import contracts, docs and this matrix
    except CommandFailed:
        failed.append("repository")
    if failed:
        session.error(f"tests failed with every package installed together: {', '.join(failed)}")


def _shared_env(session: nox.Session, key: str) -> str:
    """The python of ``.nox/family-env-<key>``: one venv per backend, shared by its families."""
    env = ROOT / ".nox" / f"family-env-{key}"
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = env / ".installed"
    editable = _editable_args(local_requirements(PACKAGES[key], ["test"]))
    wanted = "\n".join([*TORCH, "vf-core[test]", *editable])
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(env), external=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        pip = [str(python), "-m", "pip", "install", "-q"]
        session.run(*pip, *TORCH, external=True)
        session.run(*pip, "-e", "packages/vf-core[test]", external=True)
        session.run(*pip, *editable, external=True)
        stamp.write_text(wanted)
    return str(python)


@nox.session(venv_backend="none", default=False)
@nox.parametrize("name", list(FAMILIES), ids=list(FAMILIES))
def family(session: nox.Session, name: str) -> None:
    """The shared contract tests for one model family (its backend's venv, only this family selected)."""
    key = FAMILIES[name]
    python = _shared_env(session, key)
    session.run(python, "-m", "pytest", f"packages/{PACKAGES[key]}/tests/test_contract.py", *session.posargs,
                env={"VECTORFIT_FAMILY": name}, external=True)
