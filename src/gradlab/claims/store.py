"""The result store: one SQLite row per (claim, scale, seed, code fingerprint).

Each finished claim is written in its own transaction (WAL journal, ``synchronous=FULL``), after its figure
files were written atomically (temp file + ``os.replace``). A run killed by Ctrl-C or SIGKILL therefore loses
only the claims that were still running; the next run skips every row that exists for the current fingerprint.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from gradlab.core.files import check_store_path, write_atomic

STATUSES: tuple[str, ...] = ("passed", "failed", "inconclusive", "error", "timeout")

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
"""Version of the store's schema, kept in ``PRAGMA user_version``.

1: the first schema (stores written before versioning carry ``user_version = 0`` and are read as 1);
2: adds ``preconditions`` and ``headline`` (JSON) for the inconclusive verdict and the report's decisive numbers;
3: adds ``environment`` (JSON: CPU model, threads, library versions; see :mod:`gradlab.claims.environment`).
Older stores are migrated forward when opened; a newer one is refused (:class:`StoreError`) before anything runs.
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    claim_id     TEXT NOT NULL,
    paper        TEXT NOT NULL,
    scale        TEXT NOT NULL,
    seed         INTEGER NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       TEXT NOT NULL,
    metrics      TEXT NOT NULL DEFAULT '{}',
    criterion    TEXT NOT NULL DEFAULT '',
    notes        TEXT NOT NULL DEFAULT '',
    figures      TEXT NOT NULL DEFAULT '{}',
    traceback    TEXT NOT NULL DEFAULT '',
    started_at   REAL NOT NULL,
    finished_at  REAL NOT NULL,
    duration_s   REAL NOT NULL,
    backend      TEXT NOT NULL DEFAULT 'local',
    preconditions TEXT NOT NULL DEFAULT '{}',
    headline     TEXT NOT NULL DEFAULT '[]',
    environment  TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (claim_id, scale, seed, fingerprint)
);
"""

_MIGRATIONS: dict[int, str] = {
    # from version -> SQL that brings the store to version + 1
    1: ("ALTER TABLE results ADD COLUMN preconditions TEXT NOT NULL DEFAULT '{}';"
        "ALTER TABLE results ADD COLUMN headline TEXT NOT NULL DEFAULT '[]';"),
    2: "ALTER TABLE results ADD COLUMN environment TEXT NOT NULL DEFAULT '{}';",
}

_COLUMNS = ("claim_id", "paper", "scale", "seed", "fingerprint", "status", "metrics", "criterion", "notes", "figures",
            "traceback", "started_at", "finished_at", "duration_s", "backend", "preconditions", "headline",
            "environment")


class StoreError(ValueError):
    """The store file cannot be used: not an SQLite database, damaged, or written by a newer gradlab."""


@dataclass
class ResultRow:
    """One stored claim result. ``figures`` maps a figure name to a PNG path (relative to the store dir)."""

    claim_id: str
    paper: str
    scale: str
    seed: int
    fingerprint: str
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    criterion: str = ""
    notes: str = ""
    figures: dict[str, str] = field(default_factory=dict)
    traceback: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    duration_s: float = 0.0
    backend: str = "local"
    preconditions: dict[str, Any] = field(default_factory=dict)
    headline: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    """Where the claim ran (:func:`gradlab.claims.environment.run_environment`); empty in rows of older stores."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}; got {self.status!r}")

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class ResultStore:
    """SQLite-backed store of claim results; figures live next to it under ``figures/``."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        check_store_path(self.path, create=create, error=StoreError, noun="result store",
                         missing_hint="run `gradlab reproduce` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.figure_dir = self.path.parent / "figures"
        try:
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"result store {self.path} is damaged or unreadable ({exc})") from None

    def _open_schema(self) -> None:
        con = self._connect()
        try:
            version = int(con.execute("PRAGMA user_version").fetchone()[0])
            has_table = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='results'").fetchone() is not None
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"result store {self.path} has schema version {version}, newer than this gradlab's "
                    f"({SCHEMA_VERSION}); upgrade gradlab or use another --store")
            if not has_table:
                with con:
                    con.executescript(_SCHEMA)
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
            version = max(version, 1)
            while version < SCHEMA_VERSION:
                log.info("migrating result store %s from schema %d to %d", self.path, version, version + 1)
                with con:
                    con.executescript(_MIGRATIONS[version])
                    version += 1
                    con.execute(f"PRAGMA user_version = {version}")
            con.execute("SELECT count(*) FROM results").fetchone()  # touches the table: a damaged file fails here
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def save_figures(self, claim_id: str, scale: str, seed: int, fingerprint: str, pngs: dict[str, bytes]) -> dict[str, str]:
        """Write PNGs atomically; return name -> path relative to the store directory."""
        folder = Path("figures") / claim_id.replace("/", "__") / f"{scale}-seed{seed}-{fingerprint[:12]}"
        out: dict[str, str] = {}
        for name, data in pngs.items():
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "figure"
            rel = folder / f"{safe}.png"
            write_atomic(self.path.parent / rel, data)
            out[name] = rel.as_posix()
        return out

    def figure_path(self, relative: str) -> Path:
        return self.path.parent / relative

    def put(self, row: ResultRow) -> None:
        """Insert or replace one result in a single transaction."""
        with self._connect() as con:
            con.execute(
                f"INSERT OR REPLACE INTO results ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                (row.claim_id, row.paper, row.scale, int(row.seed), row.fingerprint, row.status,
                 json.dumps(row.metrics, sort_keys=True), row.criterion, row.notes,
                 json.dumps(row.figures, sort_keys=True), row.traceback, row.started_at, row.finished_at,
                 row.duration_s, row.backend, json.dumps(row.preconditions, sort_keys=True),
                 json.dumps(row.headline), json.dumps(row.environment, sort_keys=True)),
            )
        con.close()

    def get(self, claim_id: str, scale: str, seed: int, fingerprint: str) -> ResultRow | None:
        with self._connect() as con:
            cur = con.execute(
                "SELECT * FROM results WHERE claim_id=? AND scale=? AND seed=? AND fingerprint=?",
                (claim_id, scale, int(seed), fingerprint),
            )
            rec = cur.fetchone()
            cols = [d[0] for d in cur.description]
        con.close()
        return None if rec is None else self._row(dict(zip(cols, rec)))

    def rows(self) -> Iterator[ResultRow]:
        """All rows, oldest first."""
        with self._connect() as con:
            cur = con.execute("SELECT * FROM results ORDER BY finished_at")
            cols = [d[0] for d in cur.description]
            recs = cur.fetchall()
        con.close()
        for rec in recs:
            yield self._row(dict(zip(cols, rec)))

    def latest(self, claim_id: str, fingerprint: str | None = None, scales: tuple[str, ...] | None = None,
               seed: int | None = None) -> ResultRow | None:
        """Most recent row for a claim, optionally restricted to a fingerprint, scales and a seed."""
        best: ResultRow | None = None
        for row in self.rows():
            if row.claim_id != claim_id:
                continue
            if fingerprint is not None and row.fingerprint != fingerprint:
                continue
            if scales is not None and row.scale not in scales:
                continue
            if seed is not None and row.seed != seed:
                continue
            best = row
        return best

    @staticmethod
    def _row(rec: dict[str, Any]) -> ResultRow:
        rec["metrics"] = json.loads(rec["metrics"])
        rec["figures"] = json.loads(rec["figures"])
        rec["preconditions"] = json.loads(rec.get("preconditions") or "{}")
        rec["headline"] = json.loads(rec.get("headline") or "[]")
        rec["environment"] = json.loads(rec.get("environment") or "{}")
        return ResultRow(**{k: v for k, v in rec.items() if k in _COLUMNS})


def now() -> float:
    return time.time()
