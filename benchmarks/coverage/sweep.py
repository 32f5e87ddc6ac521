"""Coverage sweep: how many architectures of transformers, timm and diffusers VectorFit recognises with no module
names given, measured on tiny models built offline; regenerates ``docs/coverage.md``.

Each model (``models.py``) is injected with the default ``VectorFitConfig()`` and checked (``check.py``): its roles
present, exact at initialisation, gradients to the singular values. Records go to ``results/records.json`` after
every model, so an interrupted sweep resumes where it stopped (a model that was running when the process died is
recorded as failed, with that reason).

Usage::

    nice -n 5 python benchmarks/coverage/sweep.py                      # everything not yet recorded, then the report
    python benchmarks/coverage/sweep.py --libraries timm --redo        # check timm's models again
    python benchmarks/coverage/sweep.py --only transformers:qwen3,timm:eva --redo
    python benchmarks/coverage/sweep.py --report                       # only rewrite docs/coverage.md
    python benchmarks/coverage/sweep.py --records results/records-before.json   # another record file

The report compares with ``results/records-before.json`` (the sweep before the inference fixes) when it exists.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from check import check  # noqa: E402
from models import Case, Skip, all_cases, first_line, quiet  # noqa: E402

LIBRARIES = ("transformers", "timm", "diffusers")
GOALS = {"transformers-text": 0.95, "timm": 0.90, "diffusers": 1.0}


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def _load(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"records": {}, "meta": {}}


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return ""


def run_case(case: Case, timeout: int) -> dict:
    """Build and check one model, within ``timeout`` seconds."""
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    record: dict = {"library": case.library, "name": case.name, "kind": case.kind, "detail": case.detail}
    try:
        try:
            model, args, kwargs = case.build()
        except Skip as exc:
            record.update(status="skipped", reason=str(exc))
            return record
        except _Timeout:
            raise
        except Exception as exc:  # a builder's own error: the model could not be built
            record.update(status="skipped", reason=first_line(exc))
            return record
        if case.library == "timm":
            record["detail"] = getattr(model, "_coverage_name", "")
        try:
            with quiet():
                record.update(check(model, args, kwargs))
        except _Timeout:
            raise
        except Exception as exc:  # the base model's own forward pass in check()
            record.update(status="skipped", reason=f"base model: {first_line(exc)}")
    except _Timeout:
        record.update(status="failed", reason=f"timed out after {timeout} s")
    finally:
        signal.alarm(0)
        record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def sweep(args) -> None:
    path = HERE / args.records if not Path(args.records).is_absolute() else Path(args.records)
    data = _load(path)
    records = data["records"]
    for rec in records.values():
        if rec.get("status") == "running":
            rec.update(status="failed", reason="the process died while checking it (a crash, or out of memory)")
    libraries = [x for x in args.libraries.split(",") if x]
    only = [x for x in (args.only or "").split(",") if x]
    cases = all_cases(tuple(libraries))
    if only:
        cases = [c for c in cases if any(c.key == o or c.key.startswith(o) for o in only)]
    data["meta"].update(torch=torch.__version__, python=platform.python_version(), commit=_commit(),
                        date=datetime.date.today().isoformat())
    for lib in libraries:
        try:
            data["meta"][lib] = __import__(lib).__version__
        except Exception:
            pass
    todo = [c for c in cases if args.redo or c.key not in records or records[c.key].get("status") == "running"]
    print(f"{len(cases)} models, {len(todo)} to check -> {path}", flush=True)
    t0 = time.perf_counter()
    for i, case in enumerate(todo):
        records[case.key] = {"library": case.library, "name": case.name, "status": "running"}
        _save(path, data)
        record = run_case(case, args.timeout)
        records[case.key] = record
        _save(path, data)
        print(f"[{i + 1}/{len(todo)}] {case.key}: {record['status']}"
              f"{' - ' + record.get('reason', '') if record.get('reason') else ''} ({record['seconds']} s)",
              flush=True)
    print(f"checked {len(todo)} models in {time.perf_counter() - t0:.0f} s", flush=True)


# ================================================================================================ report
def _counted(rec: dict, library: str) -> bool:
    """Whether a record is in the share's denominator (see the report's "How it is counted")."""
    if rec["status"] in ("skipped", "no-blocks"):
        return False  # a model without attention or MLP modules gets the clear error, in every library
    if library == "diffusers":
        return True
    return rec.get("attention", False) or rec.get("mlp", False)


def _groups(records: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for rec in records.values():
        lib = rec["library"]
        if lib == "transformers":
            lib = f"transformers-{rec.get('kind', 'text')}"
        out[lib].append(rec)
    return out


def _share(recs: list[dict], library: str) -> tuple[int, int]:
    counted = [r for r in recs if _counted(r, library)]
    return sum(r["status"] == "recognised" for r in counted), len(counted)


def _verdict(rec: dict) -> str:
    status = rec["status"]
    if status in ("recognised", "partial"):
        roles = ", ".join(rec.get("roles") or []) or "no roles"
        text = f"{status}: {rec.get('origin')} `{rec.get('family')}` ({roles})"
        return text + (f"; {rec['reason']}" if status == "partial" else "")
    return f"{status}: {rec.get('reason', '')}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_TITLES = {"transformers-text": "transformers, text architectures", "transformers-vision":
           "transformers, image classification", "timm": "timm, one model per module", "diffusers":
           "diffusers, denoisers"}
_COUNTING = {
    "transformers-text": "model types (of the causal LM, masked LM, sequence classification and seq2seq mappings) that"
                         " built and whose structure shows attention or MLP modules (module classes named so: a"
                         " state-space model such as Mamba is not counted; nearly every other text model shows"
                         " attention)",
    "transformers-vision": "model types of the image classification mapping only that built and show attention or"
                           " MLP modules",
    "timm": "timm modules whose smallest model built and shows attention or MLP modules (a plain CNN gets a clear"
            " error and is not counted)",
    "diffusers": "denoiser configurations that built, except those without any attention or MLP module (UNet1DModel's"
                 " convolution-only configurations: no-blocks, with vf-core's clear error)",
}


def report(args) -> str:
    path = HERE / args.records if not Path(args.records).is_absolute() else Path(args.records)
    data = _load(path)
    before_path = RESULTS / "records-before.json"
    before_data = _load(before_path) if before_path.exists() and before_path != path else {"records": {}, "meta": {}}
    before = before_data["records"]
    meta = data["meta"]
    groups = _groups(data["records"])
    before_groups = _groups(before) if before else {}
    lines = [
        "# Coverage: architectures recognised with no module names",
        "",
        "<!-- generated by benchmarks/coverage/sweep.py; do not edit by hand -->",
        "",
        "Every architecture of transformers' auto mappings (causal LM, masked LM, sequence classification, seq2seq,"
        " image classification), one model per timm module and every diffusers denoiser, built tiny from a"
        " configuration offline, injected with the default `VectorFitConfig()` (no `target_modules`: a declared"
        " family, else roles inferred from the structure, docs/backends.md) and checked:",
        "",
        "- **roles**: every role of the family is among the decomposed vectors, and the roles the model's own module"
        " classes show (q, k, v, o where a module class is named like attention, f1, f2 where one is named like an"
        " MLP, feed-forward or experts, each holding two weight matrices or more) are there;",
        "- **exact**: the output at initialisation equals the base model's within 1e-4 of its scale (float32);",
        "- **gradients**: a backward pass reaches the singular values of every decomposed matrix whose base weight"
        " gets a gradient from the same output (experts the router did not pick aside).",
        "",
        "Verdicts: **recognised** (all three hold), **partial** (exact and trainable, but roles the structure shows"
        " are missing, or a fused projection is decomposed whole), **failed** (an error, not exact, or gradients"
        " missing), **no-blocks** (no attention or MLP modules: vf-core's `UnknownFamilyError` says so and how to name"
        " modules), **skipped** (could not be built or run here, before any VectorFit code).",
        "",
        f"Run: {meta.get('date', '?')}, commit {meta.get('commit', '?')}, torch {meta.get('torch', '?')},"
        f" transformers {meta.get('transformers', '?')}, timm {meta.get('timm', '?')}, diffusers"
        f" {meta.get('diffusers', '?')}; CPU (2 cores shared with other work), float32;"
        f" {sum(r.get('seconds', 0) for r in data['records'].values()) / 60:.0f} min of building and checking in all."
        " Regenerate: `nice -n 5 python benchmarks/coverage/sweep.py` (resumes from"
        " `benchmarks/coverage/results/records.json`; `--redo` checks again).",
        "",
        "## Shares",
        "",
        "| library | models | skipped | no-blocks | counted | recognised | partial | failed | share | goal |"
        + (" before fixes |" if before else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if before else ""),
    ]
    for lib in ("transformers-text", "transformers-vision", "timm", "diffusers"):
        recs = groups.get(lib, [])
        if not recs:
            continue
        c = Counter(r["status"] for r in recs)
        counted = [r for r in recs if _counted(r, lib)]
        cc = Counter(r["status"] for r in counted)
        ok, n = _share(recs, lib)
        goal = f"{GOALS[lib]:.0%}" if lib in GOALS else "-"
        row = (f"| {_TITLES[lib]} | {len(recs)} | {c['skipped']} | {c['no-blocks']} | {n} | {ok} | {cc['partial']}"
               f" | {cc['failed']} | **{ok / max(n, 1):.1%}** | {goal} |")
        if before:
            bok, bn = _share(before_groups.get(lib, []), lib)
            row += f" {bok}/{bn} = {bok / max(bn, 1):.1%} |"
        lines.append(row)
    if before:
        bmeta = before_data["meta"]
        lines += ["", f"Before fixes: the same models, builders and check run on vf-core at"
                      f" {bmeta.get('vf_core', bmeta.get('commit', '?'))} (`results/records-before.json`), before the"
                      " inference fixes the sweep led to (docs/backends.md, \"More spellings\" and after)."]
    lines += ["", "Counted (the share's denominator):", ""]
    lines += [f"- {_TITLES[lib]}: {_COUNTING[lib]}." for lib in _COUNTING if lib in groups]
    lines += ["", "Models not counted still get a verdict below (a text model without MLP modules that is recognised"
              " is listed as recognised but not counted, for instance).", ""]
    for lib in ("transformers-text", "transformers-vision", "timm", "diffusers"):
        recs = sorted(groups.get(lib, []), key=lambda r: r["name"])
        if not recs:
            continue
        lines += [f"## {_TITLES[lib]}", ""]
        for status in ("failed", "partial"):
            bad = [r for r in recs if r["status"] == status]
            if bad:
                lines += [f"**{status.capitalize()}** ({len(bad)}):", ""]
                lines += [f"- `{r['name']}`{' (' + r['detail'] + ')' if r.get('detail') else ''}: {r.get('reason')}"
                          for r in bad]
                lines.append("")
        lines += ["| model | built | verdict |", "|---|---|---|"]
        for r in recs:
            lines.append(f"| `{r['name']}` | {_cell(r.get('detail', ''))} | {_cell(_verdict(r))} |")
        lines.append("")
    text = "\n".join(lines).rstrip() + "\n"
    out = ROOT / "docs" / "coverage.md"
    if not args.no_report:
        out.write_text(text)
        print(f"wrote {out}")
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--only", help="comma-separated keys or key prefixes (transformers:qwen3, timm:eva)")
    parser.add_argument("--redo", action="store_true", help="check models already recorded again")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per model")
    parser.add_argument("--records", default="results/records.json", help="record file (relative to this folder)")
    parser.add_argument("--report", action="store_true", help="only regenerate docs/coverage.md from the records")
    parser.add_argument("--no-report", action="store_true", help="do not write docs/coverage.md")
    parser.add_argument("--memory-gb", type=float, default=8.0,
                        help="address-space limit of this process: a model that needs more fails with MemoryError")
    args = parser.parse_args(argv)
    if args.memory_gb > 0:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if not args.report:
        sweep(args)
    report(args)


if __name__ == "__main__":
    main()
