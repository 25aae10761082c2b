"""First-order update rules as ``torch.optim.Optimizer`` subclasses and optimizer wrappers.

Each optimizer follows torch.optim's conventions: ``param_groups``, lazily created per-parameter state with a
tensor ``step``, ``maximize``, a ``foreach`` fast path that equals the for-loop path, a single-pass ``fused``
path (:mod:`gradlab.optim._fused`; the default for CPU float32/float64 parameters), a ``state_dict`` round trip
shared by all paths, and ``torch.compile(opt.step)`` with a tensor or float ``lr``. Wrappers (coordinate-wise
clipping) compose with any torch optimizer.
"""

from gradlab.optim.adagradnorm import AdaGradNorm
from gradlab.optim.clipping import CoordinateClip, clip_coordinates, coordinate_clip
from gradlab.optim.diffgrad import DiffGrad
from gradlab.optim.lion import Lion
from gradlab.optim import search

__all__: list[str] = [
    "AdaGradNorm",
    "CoordinateClip",
    "DiffGrad",
    "Lion",
    "clip_coordinates",
    "coordinate_clip",
    "search",
]
