"""Bad input to the study commands: one-line error, non-zero exit, nothing changed; and the spec,
storage and budget rules checked directly."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from HPOToolsLib.__main__ import main
from HPOToolsLib.study.spec import SpecError, parse_spec
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
    ]
    for text, fragment in cases:
        spec = tmp_path / "spec.json"
        if text is None:
            spec.unlink(missing_ok=True)
        else:
            spec.write_text(text)
        assert_one_line_error(*cli(capsys, "run", spec, "--study", study), fragment)
        assert not study.exists()


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
