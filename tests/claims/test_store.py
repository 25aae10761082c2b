import sqlite3

import pytest

from gradlab.claims.store import ResultRow, ResultStore, atomic_write_bytes


def _row(**kw):
    base = dict(claim_id="p/c", paper="p", scale="quick", seed=0, fingerprint="abc", status="passed",
                metrics={"x": 1.5}, criterion="x > 1", started_at=1.0, finished_at=2.0, duration_s=1.0)
    base.update(kw)
    return ResultRow(**base)


def test_put_get_roundtrip_and_replace(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    assert store.get("p/c", "quick", 0, "abc") is None
    store.put(_row())
    got = store.get("p/c", "quick", 0, "abc")
    assert got.metrics == {"x": 1.5} and got.passed
    store.put(_row(status="failed", finished_at=3.0))
    assert store.get("p/c", "quick", 0, "abc").status == "failed"
    store.put(_row(fingerprint="def", finished_at=4.0))
    assert len(list(store.rows())) == 2
    assert store.latest("p/c").fingerprint == "def"
    assert store.latest("p/c", fingerprint="abc").status == "failed"
    assert store.latest("p/c", scales=("full",)) is None


def test_rows_are_visible_to_a_second_connection(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    store.put(_row())
    con = sqlite3.connect(tmp_path / "s.sqlite")
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
    con.close()


def test_bad_status_and_directory_path(tmp_path):
    with pytest.raises(ValueError, match="status"):
        _row(status="great")
    with pytest.raises(ValueError, match="must be a file"):
        ResultStore(tmp_path)


def test_figures_written_atomically(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    rel = store.save_figures("p/c", "quick", 0, "abcdef0123456789", {"loss curve": b"\x89PNG1"})
    path = store.figure_path(rel["loss curve"])
    assert path.read_bytes() == b"\x89PNG1" and path.name == "loss_curve.png"
    atomic_write_bytes(path, b"\x89PNG2")
    assert path.read_bytes() == b"\x89PNG2"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
