"""Choosing a task: by name, by an alias several tasks share, or recognised from the model and the data; and the
task records themselves."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from vf_core import PluginError
from vf_core.tasks import MAYBE, NO, SURE, Task

from vectorfit.errors import CLIError
from vectorfit.selection import check_data, choose_task, task_of_run


def _task(name, backend, models, data, aliases=(), datasets=()):
    return Task(name=name, backend=backend, description=name, aliases=aliases,
                claim_model=lambda spec: models.get(spec, NO), claim_data=lambda spec: data.get(spec, NO),
                runner=object, model_aliases={m: m for m in models}, datasets={d: d for d in datasets})


TEXT = {"bert": SURE}
TEXT_DATA = {"reviews": SURE, "ratings": SURE, "file.csv": MAYBE}
TASKS = {t.name: t for t in [
    _task("image-classification", "vision", {"vit": SURE}, {"mnist": SURE}, ("classification",), ["mnist"]),
    _task("text-classification", "nlp", TEXT, TEXT_DATA, ("classification",), ["reviews"]),
    _task("text-regression", "nlp", TEXT, TEXT_DATA, ("regression",), ["ratings"]),
]}


def test_a_task_by_name_or_by_alias():
    assert choose_task(TASKS, "bert", data="reviews", task="text-regression") == (TASKS["text-regression"], True)
    assert choose_task(TASKS, "bert", data="reviews", task="regression") == (TASKS["text-regression"], True)
    # the alias two backends share: the model decides
    assert choose_task(TASKS, "bert", data="reviews", task="classification")[0].name == "text-classification"
    assert choose_task(TASKS, "vit", data="mnist", task="classification")[0].name == "image-classification"


def test_a_task_recognised_from_the_model_and_the_data():
    assert choose_task(TASKS, "vit", data="mnist") == (TASKS["image-classification"], False)
    # the tasks of one backend tie: its first runs, and decides from the labels when it reads them
    assert choose_task(TASKS, "bert", data="file.csv", task="auto") == (TASKS["text-classification"], False)


def test_data_a_sibling_task_is_sure_of_beats_the_models_unsure_favourite():
    qa = _task("question-answering", "nlp", {"bert": MAYBE}, {"squad.json": SURE, "file.csv": MAYBE})
    tasks = {**TASKS, qa.name: qa}
    assert choose_task(tasks, "bert", data="squad.json") == (qa, False)
    assert choose_task(tasks, "bert", data="file.csv")[0].name == "text-classification"  # nobody is sure: as before
    assert choose_task(tasks, "bert", data="reviews")[0].name == "text-classification"  # the favourite is sure
    assert choose_task(tasks, "vit", data="squad.json")[0].name == "image-classification"  # another backend: never


def test_bad_choices_say_what_fits():
    with pytest.raises(CLIError, match="unknown task 'segmentation'.*text-regression \\(regression\\)"):
        choose_task(TASKS, "bert", task="segmentation")
    with pytest.raises(CLIError, match="task 'regression' does not train model 'vit'.*image-classification"):
        choose_task(TASKS, "vit", task="regression")
    with pytest.raises(CLIError, match="unknown model 'nope'.*bert, vit"):
        choose_task(TASKS, "nope")
    with pytest.raises(CLIError, match="unknown backend 'audio'"):
        choose_task(TASKS, "bert", backend="audio")
    with pytest.raises(CLIError, match="no backend is installed"):
        choose_task({}, "bert")
    twins = {**TASKS, "other": _task("other", "other-backend", TEXT, TEXT_DATA)}
    with pytest.raises(CLIError, match="could be loaded by backends nlp, other-backend; choose one with --backend"):
        choose_task(twins, "bert", data="reviews")
    assert choose_task(twins, "bert", data="reviews", backend="other-backend")[0].name == "other"


def test_data_of_another_backend_is_named():
    with pytest.raises(CLIError, match="dataset 'mnist' is for the 'vision' backend"):
        check_data(TASKS, TASKS["text-classification"], "mnist")
    with pytest.raises(CLIError, match="no such file or folder.*reviews"):
        check_data(TASKS, TASKS["text-regression"], "missing.csv")


def test_old_runs_find_their_task_by_their_kind_of_labels():
    class OldRun:  # run.json written before tasks had names: backend and kind only
        backend, task, task_name = "nlp", "regression", None

    assert task_of_run(TASKS, OldRun()).name == "text-regression"
    OldRun.task = "classification"
    assert task_of_run(TASKS, OldRun()).name == "text-classification"


def test_task_records_are_checked():
    with pytest.raises(PluginError, match="lower case"):
        _task("Text Classification", "nlp", TEXT, TEXT_DATA)
    with pytest.raises(PluginError, match="alias"):
        _task("text-classification", "nlp", TEXT, TEXT_DATA, aliases=("text-classification",))
    with pytest.raises(PluginError, match="headline"):
        Task(name="t", backend="b", description="", claim_model=len, claim_data=len, runner=object,
             headline="accuracy")
    assert TASKS["text-regression"].claim("bert", "file.csv") == MAYBE
    assert TASKS["text-regression"].claim("vit") == NO


def test_the_installed_text_and_image_tasks():
    pytest.importorskip("vf_backends_nlp")
    pytest.importorskip("vf_backends_vision")
    from vectorfit.selection import list_tasks

    tasks = list_tasks()
    assert {"text-classification", "text-regression", "image-classification"} <= set(tasks)
    assert tasks["text-classification"].headline == "eval_accuracy"
    assert tasks["text-regression"].headline == "eval_pearson"
    assert tasks["image-classification"].aliases == ("classification",)
    assert {t.name for t in tasks.values() if t.generates} <= {"causal-lm", "seq2seq", "image-generation"}
    assert {t.name for t in tasks.values() if t.generated == "images"} <= {"image-generation"}
    assert tasks["seq2seq"].headline == "eval_rougeL" and not tasks["seq2seq"].new_head
    assert not any(tasks[n].generates for n in ("text-classification", "text-regression", "image-classification"))
    assert tasks["causal-lm"].generates and not tasks["causal-lm"].new_head
    assert choose_task(tasks, "minilm", data="movie-ratings")[0].backend == "nlp"
    assert choose_task(tasks, "minilm", data="movie-ratings", task="regression")[0].name == "text-regression"
    assert choose_task(tasks, "efficientnet-lite0", data="mnist-5k")[0].name == "image-classification"


def test_the_command_comes_from_the_root_distribution():
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.dist is not None and ep.dist.name in ("vectorfit", "vf-core")}
    assert scripts == {"vectorfit": "vectorfit.cli:main"}
    assert importlib.metadata.distribution("vf-core").entry_points.select(group="console_scripts") == ()
    proc = subprocess.run([sys.executable, "-m", "vectorfit", "--version"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("vectorfit ")


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'transformers', 'timm', 'diffusers', 'peft', 'matplotlib'}:
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
"""


def test_command_help_and_list_without_model_libraries():
    code = BLOCKER + "import sys; sys.argv = ['vectorfit', '--help']\nfrom vectorfit import main\nmain()"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "train" in res.stdout and "installed tasks" in res.stdout
    code = BLOCKER + "from vectorfit import main\nraise SystemExit(main(['list']))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
