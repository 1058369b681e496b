"""Bad input to the study commands: one-line error, non-zero exit, nothing changed; and the spec,
storage and budget rules checked directly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from HPOToolsLib.__main__ import main
from HPOToolsLib.objectives import Objective, register_objective
from HPOToolsLib.space import Float, Space
from HPOToolsLib.study.spec import SpecError, parse_spec
from HPOToolsLib.study.status import study_status
from HPOToolsLib.study.storage import SCHEMA_VERSION, StudyError, StudyStore
from SegTuneCore.errors import run_cli

pytestmark = pytest.mark.timeout(120)


def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def sql(db: Path, statement: str) -> None:
    connection = sqlite3.connect(db)
    connection.execute(statement)
    connection.commit()
    connection.close()      # checkpoints the WAL into the file, as a study at rest is


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """A small finished study, copied by the tests that damage it."""
    folder = tmp_path_factory.mktemp("studies")
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"objective": "benchmark:quadratic-model", "method": "random",
                                "budget": {"trials": 3}, "seed": 0}))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["run", str(spec), "--study", str(folder / "study"), "--progress", "quiet"])
    assert exit_info.value.code == 0
    return folder / "study"


def test_bad_specs_are_refused_before_anything_is_created(tmp_path, capsys):
    study = tmp_path / "study"
    cases = [
        (None, "no such spec file"),
        ("{not json", "invalid JSON"),
        (json.dumps({"method": "bo", "budget": {"trials": 3}}), "missing 'objective'"),
        (json.dumps({"objective": "benchmark:nope", "budget": {"trials": 3}}), "unknown objective 'benchmark:nope'"),
        (json.dumps({"objective": "benchmark:branin", "method": "anneal", "budget": {"trials": 3}}), "unknown method"),
        (json.dumps({"objective": "benchmark:branin", "budget": {"trials": -1}}), "budget.trials must be > 0"),
        (json.dumps({"objective": "benchmark:branin", "budget": {}}), "budget needs"),
        (json.dumps({"objective": "benchmark:branin", "budget": {"trials": 3}, "sead": 1}), "unknown field(s) ['sead']"),
        (json.dumps({"objective": "benchmark:branin", "budget": {"trials": 3},
                     "space": {"x": {"type": "float", "low": 1, "high": 0}}}), "inverted"),
        ('{"objective": "benchmark:branin", "budget": {"trials": 3}, "seed": 1, "seed": 2}', "duplicate name 'seed'"),
        (json.dumps({"objective": "benchmark:branin", "budget": {"trials": 3},
                     "method_options": {"kernel": "cubic"}}), "method 'bo'"),
        (json.dumps({"objective": "benchmark:quadratic-model", "budget": {"trials": 3},
                     "task": "KidneyUS.segmentation"}), "differs from the task of the models"),
    ]
    for text, fragment in cases:
        spec = tmp_path / "spec.json"
        if text is None:
            spec.unlink(missing_ok=True)
        else:
            spec.write_text(text)
        assert_one_line_error(*cli(capsys, "run", spec, "--study", study), fragment)
        assert not study.exists()


@pytest.mark.parametrize("method, options, fragment", [
    ("bo", {"xi": "abc"}, "xi must be a finite number"),
    ("bo", {"n_candidates": -5}, "n_candidates must be an integer >= 1"),
    ("bo", {"n_candidates": 2.5}, "n_candidates must be an integer"),
    ("bo", {"n_initial": True}, "n_initial must be an integer"),
    ("bo", {"n_local": -1}, "n_local must be"),
    ("bo", {"n_refine": "many"}, "n_refine must be"),
    ("bo", {"polish_iterations": -1}, "polish_iterations must be"),
    ("bo", {"polish_max_n": None}, "polish_max_n must be"),
    ("bo", {"max_enumerate": -1}, "max_enumerate must be"),
    ("bo", {"n_restarts": -1}, "n_restarts must be"),
    ("bo", {"max_fit_points": 0}, "max_fit_points must be"),
    ("bo", {"refit_every": 0}, "refit_every must be"),
    ("bo", {"refit_fraction": "x"}, "refit_fraction must be"),
    ("bo", {"incremental": "no"}, "incremental must be true or false"),
    ("bo", {"penalty": "high"}, "penalty must be a finite number"),
    ("bo", {"kernel": ["se"]}, "unknown kernel"),
    ("bo", {"acquisition": "ucb"}, "unknown acquisition"),
    ("bo", {"fits": 3}, "fits must be a function"),
    ("grid", {"grid_points": 0}, "grid_points must be an integer >= 1"),
    ("grid", {"shuffle": "yes"}, "shuffle must be true or false"),
    ("random", {"max_enumerate": "all"}, "max_enumerate must be"),
    ("hyperband", {"eta": 1}, "eta must be a finite number > 1"),
    ("hyperband", {"eta": "3"}, "eta must be a finite number > 1"),
    ("hyperband", {"max_budget": 0.5}, "max_budget (R) must be a finite number >= 1"),
    ("hyperband", {"max_iterations": 0}, "max_iterations must be an integer >= 1"),
    ("hyperband-bo-thesis", {"acquisition": "ucb"}, "unknown acquisition"),
    ("hyperband-bo-thesis", {"n_candidates": 0}, "n_candidates must be"),
    ("hyperband-bo-liar", {"liar": "worst"}, "unknown liar"),
    ("hyperband-bo-liar", {"n_local": -3}, "n_local must be"),
])
def test_bad_method_options_are_refused_before_anything_is_created(tmp_path, capsys, method, options, fragment):
    # these used to pass validation and crash the study after its first trials
    objective = "benchmark:mf-hartmann6" if method.startswith("hyperband") else "benchmark:branin"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"objective": objective, "method": method, "budget": {"trials": 6},
                                "method_options": options}))
    assert_one_line_error(*cli(capsys, "run", spec, "--study", tmp_path / "study"), f"method {method!r}", fragment)
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("space, fragments", [
    ({"foo": {"type": "float", "low": 0, "high": 1}}, ["unknown parameter(s) ['foo']", "missing parameter(s) ['x1', 'x2']"]),
    ({"x1": {"type": "float", "low": -5, "high": 10}}, ["missing parameter(s) ['x2']"]),
    ({"x1": {"type": "float", "low": -5, "high": 10}, "x2": {"type": "float", "low": 0, "high": 15},
      "x3": {"type": "int", "low": 0, "high": 2}}, ["unknown parameter(s) ['x3']"]),
])
def test_space_names_must_match_the_objective(tmp_path, capsys, space, fragments):
    # "foo" for Branin used to run: every trial failed with KeyError 'x1', exit 0
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"objective": "benchmark:branin", "budget": {"trials": 3}, "space": space}))
    assert_one_line_error(*cli(capsys, "run", spec, "--study", tmp_path / "study"), "benchmark:branin", *fragments)
    assert not (tmp_path / "study").exists()


def test_space_may_narrow_or_leave_out_what_the_objective_allows():
    narrowed = parse_spec({"objective": "benchmark:branin", "budget": {"trials": 3},
                           "space": {"x1": {"type": "float", "low": 0, "high": 1},
                                     "x2": {"type": "float", "low": 0, "high": 1}}})
    assert narrowed.space.names == ["x1", "x2"]
    # an objective with defaults for left-out parameters takes a subset, but no foreign name
    register_objective("test:defaults", lambda: Objective("test:defaults", lambda p: p.get("a", 0.0),
                                                          Space({"a": Float(0, 1), "b": Float(0, 1)})), replace=True)
    subset = {"a": {"type": "float", "low": 0, "high": 1}}
    assert parse_spec({"objective": "test:defaults", "budget": {"trials": 3}, "space": subset}).space.names == ["a"]
    with pytest.raises(SpecError, match=r"unknown parameter\(s\) \['c'\]"):
        parse_spec({"objective": "test:defaults", "budget": {"trials": 3},
                    "space": {**subset, "c": {"type": "float", "low": 0, "high": 1}}})


def test_a_cuda_device_that_does_not_exist_is_refused(tmp_path, capsys):
    import torch

    # used to be accepted without a GPU; the study then ran (its trials on whatever they found)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"objective": "benchmark:branin", "budget": {"trials": 2}}))
    absent = [f"cuda:{torch.cuda.device_count()}", f"cpu,cuda:{torch.cuda.device_count()}"]
    if not torch.cuda.is_available():
        absent += ["cuda", "cuda:0"]
    for device in absent:
        assert_one_line_error(*cli(capsys, "run", spec, "--study", tmp_path / "study", "--device", device), "cuda")
        assert not (tmp_path / "study").exists()


def test_folders_that_are_not_studies(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("hello")
    before = tree_digest(plain)
    for command in ("status", "resume", "cancel", "install", "report"):
        assert_one_line_error(*cli(capsys, command, plain), "not a study folder")
    assert_one_line_error(*cli(capsys, "export", plain, "--csv"), "not a study folder")
    assert_one_line_error(*cli(capsys, "status", tmp_path / "missing"), "no such study folder")
    assert tree_digest(plain) == before
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"objective": "benchmark:branin", "budget": {"trials": 2}}))
    assert_one_line_error(*cli(capsys, "run", spec, "--study", plain), "not an empty folder")
    assert tree_digest(plain) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated", "newer", "foreign"])
def test_damaged_database_is_refused_and_left_untouched(finished_study, tmp_path, capsys, damage):
    study = tmp_path / "study"
    shutil.copytree(finished_study, study)
    db = study / "study.db"
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
        fragment = "corrupt study database"
    elif damage == "truncated":
        db.write_bytes(db.read_bytes()[:3000])
        fragment = "corrupt study database"
    elif damage == "newer":
        sql(db, f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        fragment = "newer than this HPOTools supports"
    else:
        db.unlink()
        sql(db, "CREATE TABLE other(x)")
        fragment = "not a SegTune study database"
    before = tree_digest(study)
    for args in (["status", study, "--json"], ["resume", study], ["install", study], ["report", study],
                 ["export", study, "--csv"], ["cancel", study], ["list", tmp_path, "--json"]):
        code, out, err = cli(capsys, *args)
        if args[0] == "list":       # list shows the damaged study as unreadable instead of failing
            assert code == 0 and json.loads(out)[0]["state"] == "unreadable" and fragment in out
        else:
            assert_one_line_error(code, out, err, fragment)
        assert tree_digest(study) == before, f"{args[0]} changed the damaged study"


def test_read_only_store_creates_and_changes_no_database_file(finished_study, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(finished_study, study)
    db = study / "study.db"
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    store = StudyStore.open(study, read_only=True)
    try:
        assert study_status(store)["trials"]["complete"] == 3
        # a writing connection would have created these (and cannot in a read-only folder)
        assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            with store.write() as connection:
                store.put(connection, "state", "cancelled")
    finally:
        store.close()
    assert sorted(p.name for p in study.iterdir()) == ["spec.json", "study.db", "trials"]
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before


def _read_only_mount_works() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro / /mnt"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _read_only_mount_works(), reason="needs `unshare -m` and bind mounts (root)")
def test_read_only_commands_work_on_a_read_only_folder(finished_study, tmp_path):
    # the reviewer's case: on a read-only mount, status/export/report/list called a healthy study corrupt
    root = tmp_path / "root"
    shutil.copytree(finished_study, root / "study")
    study, output = root / "study", tmp_path / "report.png"
    commands = [["status", study, "--json"], ["export", study, "--csv"], ["report", study, "-o", output],
                ["list", root, "--json"]]
    script = f"mount --bind -o ro {root} {root} && " + " && ".join(
        " ".join([sys.executable, "-m", "HPOToolsLib", *map(str, c)]) for c in commands)
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert "corrupt" not in result.stdout + result.stderr and '"unreadable"' not in result.stdout
    assert json.loads(result.stdout[:result.stdout.index("\n}\n") + 2])["state"] == "finished"
    assert output.is_file()
    # without -o the report would go into the read-only study: one line that says so
    report = " ".join([sys.executable, "-m", "HPOToolsLib", "report", str(study)])
    refused = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {root} {root} && {report}"],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "report.png: cannot be written, the folder" in refused.stderr and "is read-only" in refused.stderr


@pytest.mark.skipif(not _read_only_mount_works(), reason="needs `unshare -m` and bind mounts (root)")
def test_install_works_from_a_read_only_folder(finished_study, tmp_path):
    # was "corrupt study database": install opened the study for writing and staged the model in it
    root = tmp_path / "root"
    shutil.copytree(finished_study, root / "study")
    study = root / "study"
    before = tree_digest(study)
    command = " ".join([sys.executable, "-m", "HPOToolsLib", "install", str(study), "--json"])
    result = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {root} {root} && {command}"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    installed = json.loads(result.stdout)
    assert installed["recorded_in_study"] is False
    store = StudyStore.open(study, read_only=True)
    artifact = store.trial(installed["trial"]).artifact
    store.close()
    meta = json.loads((Path(installed["path"]) / "model.json").read_text())
    assert meta["installed_from"] == str((study / artifact).resolve())
    assert tree_digest(study) == before


def test_run_refuses_an_existing_study_and_resume_of_finished_is_a_no_op(finished_study, tmp_path, capsys):
    before = tree_digest(finished_study)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"objective": "benchmark:branin", "budget": {"trials": 2}}))
    assert_one_line_error(*cli(capsys, "run", spec, "--study", finished_study), "already a study")
    code, out, _ = cli(capsys, "resume", finished_study, "--json")
    assert code == 0 and json.loads(out)["state"] == "finished"
    assert_one_line_error(*cli(capsys, "install", finished_study, "--trial", 7), "no trial 7")
    code, out, _ = cli(capsys, "export", finished_study, "--csv")
    rows = out.strip().splitlines()
    assert code == 0 and len(rows) == 4 and rows[0].startswith("trial,state,value,param.x,param.y")
    code, out, _ = cli(capsys, "list", finished_study.parent, "--json")
    listed = json.loads(out)
    assert code == 0 and [row["study"] for row in listed] == [str(finished_study)]
    assert listed[0]["trials"]["complete"] == 3 and listed[0]["state"] == "finished"
    # the study files we compare are unchanged (reading does not rewrite the database)
    after = tree_digest(finished_study)
    assert {k: v for k, v in after.items() if k.startswith("trials/")} == \
           {k: v for k, v in before.items() if k.startswith("trials/")}


def test_spec_defaults_and_validation():
    spec = parse_spec({"objective": "benchmark:hartmann6", "method": "bo", "budget": {"trials": 40}, "seed": 0})
    assert spec.budget_trials == 40 and spec.seed == 0 and spec.on_stale == "requeue" and spec.max_attempts == 3
    assert list(spec.raw["space"]) == [f"x{i}" for i in range(1, 7)]
    assert parse_spec(spec.raw).raw == spec.raw            # the stored form parses to itself
    with pytest.raises(SpecError, match="multi-fidelity"):
        parse_spec({"objective": "benchmark:hartmann6", "method": "hyperband", "budget": {"trials": 4}})
    with pytest.raises(SpecError, match="stale_after"):
        parse_spec({"objective": "benchmark:branin", "budget": {"trials": 4},
                    "heartbeat": {"interval": 5, "stale_after": 6}})


def test_the_study_task_is_the_spec_s_or_the_objective_s_model_task():
    for objective, task in (("benchmark:quadratic-model", "HPOTools.quadratic-model"),
                            ("MRIFieldOfView:classifier", "MRIFieldOfView.slice-classifier"),
                            ("KidneyUS:unet", "KidneyUS.segmentation")):
        spec = parse_spec({"objective": objective, "method": "random", "budget": {"trials": 2}})
        assert spec.task == spec.raw["task"] == task
        assert parse_spec(spec.raw).raw == spec.raw
        assert parse_spec({**spec.raw, "task": task}).task == task    # the same task, given: accepted
    assert "task" not in parse_spec({"objective": "benchmark:branin", "budget": {"trials": 2}}).raw


def test_a_model_of_another_task_fails_its_trial_and_is_never_installed(tmp_path, capsys):
    # the objective saves KidneyUS models although its trials are HPOTools.quadratic-model ones
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"objective": "benchmark:quadratic-model", "method": "random",
                                "objective_options": {"saved_task": "KidneyUS.segmentation"},
                                "budget": {"trials": 2}, "seed": 0}))
    study = tmp_path / "study"
    code, _, _ = cli(capsys, "run", spec, "--study", study, "--progress", "quiet")
    store = StudyStore.open(study)
    trials = store.trials()
    store.close()
    assert code == 0 and [t.state.value for t in trials] == ["failed", "failed"]
    assert all("'KidneyUS.segmentation', expected 'HPOTools.quadratic-model'" in t.error and t.artifact is None
               and t.value is None for t in trials), [t.error for t in trials]
    assert_one_line_error(*cli(capsys, "install", study), "no completed trial")


def test_install_refuses_a_model_whose_task_was_changed_after_its_trial(finished_study, tmp_path, capsys):
    study = tmp_path / "study"
    shutil.copytree(finished_study, study)
    store = StudyStore.open(study)
    artifact = store.trial(0).artifact
    store.close()
    meta_file = study / artifact / "model.json"   # the checksum covers the weights only
    meta_file.write_text(meta_file.read_text().replace("HPOTools.quadratic-model", "KidneyUS.segmentation"))
    assert_one_line_error(*cli(capsys, "install", study, "--trial", 0),
                          "'KidneyUS.segmentation', expected 'HPOTools.quadratic-model'")
    assert not (Path(os.environ["SEGTUNE_HOME"]) / "models").exists()


def test_store_rejects_a_second_create_and_finishing_a_trial_twice(tmp_path):
    store = StudyStore.create(tmp_path / "s", {"objective": "x"})
    with pytest.raises(StudyError, match="already a study"):
        StudyStore.create(tmp_path / "s", {"objective": "x"})
    with store.write() as connection:
        number = StudyStore.insert_trial(connection, {"x": 1}, worker="w1", device="cpu")
    assert store.finish(number, "w2", state="complete", value=1.0, error=None) is False   # not w2's trial
    assert store.finish(number, "w1", state="complete", value=2.0, error=None) is True
    assert store.finish(number, "w1", state="complete", value=3.0, error=None) is False   # already finished
    assert store.trial(number).value == 2.0
    assert [e["kind"] for e in store.events()].count("stale-result") == 2
    store.close()
