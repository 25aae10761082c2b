"""Run one paper's claim from Python and read its evidence.

``run_claim_inline`` seeds everything, runs the claim in this process and returns its ``Evidence``: the measured
metrics, the criterion (fixed in the code before the run), the verdict, the preconditions and the figures. The
``smoke`` scale only proves that the code path runs; evidence comes from ``scale="quick"`` or ``"full"`` (minutes
on one CPU thread), or from ``gradlab reproduce --only diffgrad``, which also stores the result for the report.

Run: ``python examples/run_claim_from_python.py`` (writes the claim's figure, ``diffgrad_trajectories.png``).
"""

import torch

from gradlab.claims.inline import run_claim_inline
from gradlab.claims.registry import load_registry

torch.set_num_threads(1)

registry = load_registry()
entry = registry.papers["diffgrad"]
print(f"{entry.paper.title}\n  statement: {entry.paper.statement}")
print("  components:", ", ".join(entry.paper.components))
for spec in entry.claims:
    print(f"  claim {spec.id}: {spec.title}")

evidence = run_claim_inline("diffgrad/synthetic_1d", scale="smoke", seed=0)
print(f"\nverdict at smoke scale: {evidence.verdict} (smoke proves the code path; it is not evidence)")
print("criterion:", evidence.criterion)
for check in evidence.headline:
    print("  ", check)
for name, png in evidence.figure_pngs().items():
    path = f"diffgrad_{name}.png"
    with open(path, "wb") as fh:
        fh.write(png)
    print("figure written:", path)
