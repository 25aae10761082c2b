"""Benchmark trials in the SQLite result store (tables ``bench_trials`` and ``bench_runs``).

By default the tables live in the same SQLite file as the claims' results (``.gradlab/results.sqlite``; the claims'
store ignores tables it does not own, and this module knows nothing of the claims'). The bench tables carry their
own schema version (table ``bench_meta``); a newer one is refused. Each finished trial is written in its own transaction (WAL journal, ``synchronous=FULL``) keyed by the trial's key and
the fingerprint of its specification (``TrialSpec.fingerprint`` of :class:`gradlab.bench.runner.TrialSpec`): a benchmark stopped by
Ctrl-C or SIGKILL loses only the trials that were running, and a rerun with a changed plan (seed, targets,
hyperparameters, budget) reruns exactly the trials it changed.

``bench_runs`` keeps, per output directory, the last plan that ran there (workloads with their metric and target,
submissions, ruleset, sizes, seed and the ``(key, fingerprint)`` of every planned trial), so ``gradlab report``
rebuilds ``bench.html``/``BENCH.md``/``profile.png`` from the trials without rerunning or importing anything.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.core.files import check_store_path

if TYPE_CHECKING:  # pragma: no cover
    from gradlab.bench.runner import TrialSpec
    from gradlab.bench.timing import TrialResult

__all__ = ["BenchStore", "BenchStoreError", "BENCH_SCHEMA_VERSION"]

BENCH_SCHEMA_VERSION = 1
"""Version of the bench tables (``bench_meta.schema``): 1 = ``bench_trials`` + ``bench_runs``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bench_trials (
    trial_key    TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    workload     TEXT NOT NULL,
    submission   TEXT NOT NULL,
    study        INTEGER NOT NULL,
    trial        INTEGER NOT NULL,
    result       TEXT NOT NULL,
    finished_at  REAL NOT NULL,
    PRIMARY KEY (trial_key, fingerprint)
);
CREATE TABLE IF NOT EXISTS bench_runs (
    out_dir      TEXT PRIMARY KEY,
    plan         TEXT NOT NULL,
    finished_at  REAL NOT NULL
);
"""


class BenchStoreError(ValueError):
    """The store file cannot be used: a directory, under a file, not SQLite, damaged, or newer bench tables."""


class BenchStore:
    """Finished benchmark trials and run plans in the SQLite file at ``path`` (created when missing).

    Raises :class:`BenchStoreError` (a ``ValueError``) before anything runs when ``path`` is a directory, lies under
    a file, is not an SQLite database, is damaged, or holds bench tables of a newer gradlab.
    """

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        check_store_path(self.path, create=create, error=BenchStoreError, noun="store",
                         missing_hint="run `gradlab bench` first")
        try:
            self._open_schema(create)
        except sqlite3.DatabaseError as exc:
            raise BenchStoreError(f"store {self.path} is damaged or unreadable ({exc})") from None

    def _open_schema(self, create: bool) -> None:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            has_meta = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='bench_meta'").fetchone() is not None
            version = 0
            if has_meta:
                row = con.execute("SELECT value FROM bench_meta WHERE key='schema'").fetchone()
                version = int(row[0]) if row else 0
            if version > BENCH_SCHEMA_VERSION:
                raise BenchStoreError(f"store {self.path} holds bench tables of schema {version}, newer than this "
                                      f"gradlab's ({BENCH_SCHEMA_VERSION}); upgrade gradlab or use another --store")
            if version < BENCH_SCHEMA_VERSION and create:
                with con:
                    con.executescript(_SCHEMA)
                    con.execute("INSERT OR REPLACE INTO bench_meta VALUES ('schema', ?)", (str(BENCH_SCHEMA_VERSION),))
            elif version < BENCH_SCHEMA_VERSION:
                raise BenchStoreError(f"store {self.path} holds no benchmark (run `gradlab bench` first)")
            con.execute("SELECT count(*) FROM bench_trials").fetchone()  # a damaged file fails here
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def get(self, spec: "TrialSpec") -> "TrialResult | None":
        """The stored result of ``spec`` for its current fingerprint, or ``None``."""
        from gradlab.bench.timing import TrialResult

        con = self._connect()
        try:
            rec = con.execute("SELECT result FROM bench_trials WHERE trial_key=? AND fingerprint=?",
                              (spec.key, spec.fingerprint)).fetchone()
        finally:
            con.close()
        if rec is None:
            return None
        try:
            return TrialResult.from_json(json.loads(rec[0]))
        except (ValueError, KeyError, TypeError):  # an unreadable row counts as none: the trial reruns
            return None

    def put(self, spec: "TrialSpec", result: "TrialResult") -> None:
        """Store one finished trial in one transaction (replacing a row of the same key and fingerprint)."""
        con = self._connect()
        try:
            with con:
                con.execute("INSERT OR REPLACE INTO bench_trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (spec.key, spec.fingerprint, spec.workload, spec.submission, int(spec.study),
                             int(spec.trial), json.dumps(result.to_json()), time.time()))
        finally:
            con.close()

    def count(self) -> int:
        """How many trial rows the store holds (all plans)."""
        con = self._connect()
        try:
            return int(con.execute("SELECT count(*) FROM bench_trials").fetchone()[0])
        finally:
            con.close()

    def trials(self, keys: list[tuple[str, str]]) -> "dict[tuple[str, str], TrialResult]":
        """The stored results of the given ``(key, fingerprint)`` pairs (missing or unreadable ones left out)."""
        from gradlab.bench.timing import TrialResult

        wanted = set(keys)
        con = self._connect()
        try:
            rows = con.execute("SELECT trial_key, fingerprint, result FROM bench_trials").fetchall()
        finally:
            con.close()
        out = {}
        for key, fp, text in rows:
            if (key, fp) in wanted:
                try:
                    out[(key, fp)] = TrialResult.from_json(json.loads(text))
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    def put_run(self, out_dir: str | Path, plan: dict[str, Any]) -> None:
        """Record the plan that last ran into ``out_dir`` (JSON-serialisable; see the module docstring)."""
        con = self._connect()
        try:
            with con:
                con.execute("INSERT OR REPLACE INTO bench_runs VALUES (?, ?, ?)",
                            (str(Path(out_dir)), json.dumps(plan, sort_keys=True), time.time()))
        finally:
            con.close()

    def runs(self) -> list[tuple[str, dict[str, Any], float]]:
        """Every recorded run as ``(out_dir, plan, finished_at)``, most recent last."""
        con = self._connect()
        try:
            rows = con.execute("SELECT out_dir, plan, finished_at FROM bench_runs ORDER BY finished_at").fetchall()
        finally:
            con.close()
        return [(d, json.loads(p), float(t)) for d, p, t in rows]
