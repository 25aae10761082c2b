"""Shared setups: run once per scale and seed, before the claims that need them, without blocking other claims."""

import dataclasses
import os
import sys

import pytest

from gradlab.claims import ClaimRun, Setup, claim, setup
from gradlab.claims.registry import load_registry
from gradlab.claims.runner import _Schedule, plan, run_tasks
from gradlab.claims.store import ResultStore
from gradlab.claims.types import setup_closure

from tests.fixtures.cli_helpers import ROOT


@pytest.fixture
def setup_env(tmp_path, monkeypatch):
    marks = tmp_path / "marks"
    marks.mkdir()
    for key, value in {"GRADLAB_EXTRA_PAPERS": "tests.fixtures.setup_papers", "GRADLAB_DEMO_MARKER": str(marks),
                       "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GRADLAB_SETUP_FAIL", raising=False)
    if str(ROOT) not in sys.path:
        monkeypatch.syspath_prepend(str(ROOT))
    return {"marks": marks, "store": ResultStore(tmp_path / "store" / "results.sqlite")}


def _log(marks) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for line in (marks / "log").read_text().splitlines():
        name, start, end = line.split()
        out.setdefault(name, []).append((float(start), float(end)))
    return out


def test_setups_run_once_first_and_do_not_block_independent_claims(setup_env):
    events = []
    rows = run_tasks(plan(load_registry(), ["setupdemo"], "smoke", 0), setup_env["store"], workers=2,
                     observer=events.append)
    assert {r.claim_id: r.status for r in rows} == {f"setupdemo/{n}": "passed"
                                                   for n in ("first", "second", "third", "independent")}
    log = _log(setup_env["marks"])
    assert len(log["base-model"]) == 1 and len(log["fine-tuned"]) == 1  # once, although three claims need them
    base_end, tuned_start, tuned_end = log["base-model"][0][1], log["fine-tuned"][0][0], log["fine-tuned"][0][1]
    assert tuned_start >= base_end
    for name in ("first", "second"):
        assert log[name][0][0] >= tuned_end
    assert log["third"][0][0] >= base_end
    # the second worker started the claim that needs nothing while the first built the base model
    order = [(e.kind, e.task.id) for e in events if e.kind in ("start", "setup_start", "setup_done", "done")]
    assert order[0] == ("setup_start", "setup:base-model")
    assert order.index(("start", "setupdemo/independent")) < order.index(("setup_done", "setup:base-model"))
    done = [e for e in events if e.kind == "setup_done"]
    assert [e.message for e in done] == ["done", "done"] and all(e.seconds >= 0.5 for e in done)
    (setup_env["marks"] / "log").unlink()
    # everything stored: a rerun starts nothing, not even the setups
    run_tasks(plan(load_registry(), ["setupdemo"], "smoke", 0), setup_env["store"], workers=2)
    assert not (setup_env["marks"] / "log").exists()


def test_only_the_setups_of_the_claims_to_run_are_run(setup_env):
    tasks = [t for t in plan(load_registry(), ["setupdemo"], "smoke", 0) if t.spec.name in ("third", "independent")]
    rows = run_tasks(tasks, setup_env["store"], workers=1)
    assert {r.status for r in rows} == {"passed"}
    assert set(_log(setup_env["marks"])) == {"base-model", "third", "independent"}


def test_a_failed_setup_is_reported_and_its_claims_still_run(setup_env, monkeypatch):
    monkeypatch.setenv("GRADLAB_SETUP_FAIL", "base-model")
    events = []
    rows = run_tasks(plan(load_registry(), ["setupdemo"], "smoke", 0), setup_env["store"], workers=2,
                     observer=events.append)
    status = {r.claim_id.split("/")[1]: r.status for r in rows}
    assert status == {"first": "failed", "second": "failed", "third": "failed", "independent": "passed"}
    done = {e.task.id: e.message for e in events if e.kind == "setup_done"}
    assert done == {"setup:base-model": "error", "setup:fine-tuned": "done"}


def test_a_setup_past_its_limit_is_killed_and_its_claims_still_run(setup_env, monkeypatch):
    monkeypatch.setenv("GRADLAB_SETUP_SLEEP", "60")
    from gradlab.claims.registry import find_claim

    fine = find_claim("setupdemo/first").needs[0]
    events = []
    tasks = [t for t in plan(load_registry(), ["setupdemo"], "smoke", 0) if t.spec.name == "first"]
    quick_fine = dataclasses.replace(fine, timeouts={"smoke": 2.0})
    tasks = [dataclasses.replace(t, spec=dataclasses.replace(t.spec, needs=(quick_fine,))) for t in tasks]
    rows = run_tasks(tasks, setup_env["store"], workers=1, observer=events.append)
    assert [r.status for r in rows] == ["failed"]  # fine-tuned was never written
    assert [e.message for e in events if e.kind == "setup_done"] == ["done", "timeout"]


def test_setup_decorator_validates_its_arguments():
    with pytest.raises(ValueError, match="setup name"):
        setup("Bad Name")
    with pytest.raises(TypeError, match="needs must be a tuple of Setup"):
        setup("ok", needs=("base-model",))
    with pytest.raises(ValueError, match="timeouts"):
        setup("ok", timeouts={"smoke": -1})

    def outer():
        def inner(run: ClaimRun) -> None:
            return None
        return inner

    with pytest.raises(ValueError, match="module-level"):
        setup("ok")(outer())
    with pytest.raises(TypeError, match="needs must be a tuple of Setup"):
        claim(paper="x", title="t", needs=[object()])


def _fn(run: ClaimRun) -> None:
    return None


def test_setup_closure_orders_dependencies_first_and_rejects_cycles():
    a = Setup("a", _fn, __name__, "_fn")
    b = Setup("b", _fn, __name__, "_fn", needs=(a,))
    c = Setup("c", _fn, __name__, "_fn", needs=(a, b))
    assert [s.name for s in setup_closure((c, b))] == ["a", "b", "c"]
    assert [s.name for s in c.closure()] == ["a", "b", "c"]
    object.__setattr__(a, "needs", (c,))  # a -> c -> a
    with pytest.raises(ValueError, match="cycle"):
        setup_closure((c,))


def test_two_different_setups_with_one_name_are_refused(setup_env):
    tasks = plan(load_registry(), ["setupdemo"], "smoke", 0)
    impostor = Setup("base-model", _fn, __name__, "_fn")
    clash = dataclasses.replace(tasks[0], spec=dataclasses.replace(tasks[0].spec, needs=(impostor,)))
    with pytest.raises(ValueError, match="two different setups are named 'base-model'"):
        _Schedule([*tasks, clash])
