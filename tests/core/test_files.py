"""gradlab.core.files: atomic writes and store-path checks (shared by the claim store and the benchmark)."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from gradlab.core.files import check_store_path, write_atomic


class _Err(ValueError):
    pass


def test_written_files_get_the_mode_a_normal_write_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", "{}")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        (tmp_path / "b.json").write_text("x")
        os.chmod(tmp_path / "b.json", 0o600)
        write_atomic(tmp_path / "b.json", b"{}")
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600 and (tmp_path / "b.json").read_text() == "{}"
    finally:
        os.umask(old)


def test_write_atomic_creates_parents_encodes_text_and_leaves_no_temporary_file(tmp_path):
    write_atomic(tmp_path / "deep" / "er" / "x.md", "é")
    assert (tmp_path / "deep" / "er" / "x.md").read_bytes() == "é".encode()
    assert sorted(p.name for p in (tmp_path / "deep" / "er").iterdir()) == ["x.md"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # not str/bytes: fails inside the write
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_check_store_path_refuses_what_cannot_be_a_store(tmp_path):
    kw = dict(error=_Err, noun="result store", missing_hint="run it first")
    with pytest.raises(_Err, match="must be a file, not a directory"):
        check_store_path(tmp_path, create=True, **kw)
    (tmp_path / "f").write_text("x")
    with pytest.raises(_Err, match="lies under a file"):
        check_store_path(tmp_path / "f" / "s.sqlite", create=True, **kw)
    with pytest.raises(_Err, match=r"no result store at .*missing.sqlite \(run it first\)"):
        check_store_path(tmp_path / "missing.sqlite", create=False, **kw)
    with pytest.raises(_Err, match="is not an SQLite result store"):
        check_store_path(tmp_path / "f", create=True, **kw)
    check_store_path(tmp_path / "new" / "s.sqlite", create=True, **kw)  # missing but creatable: fine
    (tmp_path / "empty.sqlite").write_bytes(b"")
    check_store_path(tmp_path / "empty.sqlite", create=False, **kw)  # an empty file becomes a store
    sqlite3.connect(tmp_path / "real.sqlite").execute("CREATE TABLE t (x)").connection.close()
    check_store_path(tmp_path / "real.sqlite", create=False, **kw)
