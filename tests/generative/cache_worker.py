"""Subprocess helper of test_cache.py: ``python cache_worker.py ROOT MODE`` calls ``cached_artifact`` once.

MODE ``slow``: the build appends a line to ROOT/builds.log, sleeps 1.5 s and writes data.txt.
MODE ``hang``: the build writes part.txt, then sleeps until killed.
"""

import sys
import time
from pathlib import Path

from gradlab.generative.cache import cached_artifact


class Build:
    def __init__(self, root: Path, mode: str):
        self.root, self.mode = root, mode

    def __call__(self, tmp: Path) -> None:
        with open(self.root / "builds.log", "a") as f:
            f.write(f"{self.mode}\n")
        if self.mode == "hang":
            (tmp / "part.txt").write_text("half")
            (self.root / "started").write_text("1")
            time.sleep(600)
        time.sleep(1.5)
        (tmp / "data.txt").write_text("done")


if __name__ == "__main__":
    root, mode = Path(sys.argv[1]), sys.argv[2]
    print(cached_artifact("worker", {"v": 1}, Build(root, mode), cache_dir=root / "cache"))
