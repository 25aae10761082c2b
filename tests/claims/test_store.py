import sqlite3

import pytest

from gradlab.claims.store import ResultRow, ResultStore
from gradlab.core.files import write_atomic


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
    write_atomic(path, b"\x89PNG2")
    assert path.read_bytes() == b"\x89PNG2"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def _old_schema_store(path):
    """A store as gradlab wrote it before schema versioning (user_version 0, no preconditions/headline)."""
    con = sqlite3.connect(path)
    con.executescript("""
    CREATE TABLE results (claim_id TEXT NOT NULL, paper TEXT NOT NULL, scale TEXT NOT NULL, seed INTEGER NOT NULL,
        fingerprint TEXT NOT NULL, status TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}',
        criterion TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT '', figures TEXT NOT NULL DEFAULT '{}',
        traceback TEXT NOT NULL DEFAULT '', started_at REAL NOT NULL, finished_at REAL NOT NULL,
        duration_s REAL NOT NULL, backend TEXT NOT NULL DEFAULT 'local',
        PRIMARY KEY (claim_id, scale, seed, fingerprint));
    INSERT INTO results VALUES ('p/c','p','quick',0,'abc','passed','{"x": 2}','x > 1','','{}','',1,2,1,'local');
    """)
    con.commit()
    con.close()


def test_old_store_is_migrated_forward_keeping_its_rows(tmp_path, caplog):
    import logging

    from gradlab.claims.store import SCHEMA_VERSION

    path = tmp_path / "old.sqlite"
    _old_schema_store(path)
    with caplog.at_level(logging.INFO, logger="gradlab"):
        store = ResultStore(path)
    assert any(r.name == "gradlab.claims.store" and "migrating" in r.getMessage() for r in caplog.records)
    row = store.get("p/c", "quick", 0, "abc")
    assert row is not None and row.metrics == {"x": 2} and row.preconditions == {} and row.headline == []
    assert row.environment == {}  # not recorded before schema 3
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()
    store.put(_row(claim_id="p/d", status="inconclusive", preconditions={"learned": {"ok": False, "check": None}},
                   headline=[{"label": "x", "value": 1.0, "op": "<", "bound": 2.0, "ok": True}]))
    got = ResultStore(path).get("p/d", "quick", 0, "abc")
    assert got.status == "inconclusive" and got.preconditions["learned"]["ok"] is False
    assert got.headline[0]["label"] == "x"
    store.put(_row(claim_id="p/e", environment={"cpu": "X", "threads": 1}))
    assert ResultStore(path).get("p/e", "quick", 0, "abc").environment == {"cpu": "X", "threads": 1}


def test_newer_store_is_refused_before_anything_is_written(tmp_path):
    from gradlab.claims.store import SCHEMA_VERSION, StoreError

    path = tmp_path / "new.sqlite"
    ResultStore(path)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer"):
        ResultStore(path)


def test_unusable_store_paths_give_clear_errors(tmp_path):
    from gradlab.claims.store import StoreError

    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database")
    with pytest.raises(StoreError, match="not an SQLite"):
        ResultStore(text)
    with pytest.raises(StoreError, match="under a file"):
        ResultStore(text / "s.sqlite")
    with pytest.raises(StoreError, match="no result store"):
        ResultStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()
    good = tmp_path / "good.sqlite"
    ResultStore(good).put(_row())
    data = good.read_bytes()
    (tmp_path / "cut.sqlite").write_bytes(data[:200] + b"\0" * 2000)
    with pytest.raises(StoreError, match="damaged|not an SQLite"):
        ResultStore(tmp_path / "cut.sqlite")


def test_atomic_writes_respect_umask_and_keep_existing_modes(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        new = tmp_path / "new.bin"
        write_atomic(new, b"x")
        assert new.stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "kept.md"
        kept.write_text("a")
        os.chmod(kept, 0o664)
        write_atomic(kept, b"b")
        assert kept.stat().st_mode & 0o777 == 0o664 and kept.read_bytes() == b"b"
    finally:
        os.umask(old)
