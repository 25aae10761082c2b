"""Key mapping from official YOLOv9 (PGI) checkpoints to the deployed GELAN layout.

An official ``yolov9-c`` model has a ``Silence`` layer 0, the main branch at layers 1..22, the auxiliary branch
after it and a ``DualDDetect`` last, whose ``cv4``/``cv5``/``dfl2`` form the main head (``cv2``/``cv3``/``dfl`` are
the auxiliary head). Removing the auxiliary branch (the official re-parameterization step) maps layer ``i + 1``
to GELAN layer ``i`` for the main branch and the main head to ``model.<n_main>.cv2/cv3/dfl`` (research notes
§5a). Load only state dicts (``torch.load(..., weights_only=True)``), never pickled model objects.
"""

from __future__ import annotations

from typing import Mapping

import torch

from gradlab.core.validation import check_int

_MAIN_HEAD = (("cv4.", "cv2."), ("cv5.", "cv3."), ("dfl2.", "dfl."))


def gelan_state_dict_from_yolov9(state_dict: Mapping[str, torch.Tensor], n_main: int = 22,
                                 head_index: int | None = None) -> dict[str, torch.Tensor]:
    """GELAN state dict (``model.0..model.<n_main>``) from an official YOLOv9 PGI state dict.

    Args:
        state_dict: official keys ``model.<i>.…`` (layer 0 ``Silence``).
        n_main: number of main-branch layers before the head (22 for yolov9-c, i.e. gelan-c's head index).
        head_index: the ``DualDDetect`` layer (default: the largest layer index present).

    Raises ``ValueError`` when no main-head (``cv4``/``cv5``) keys are found at ``head_index``.
    """
    check_int("n_main", n_main, minimum=1)
    idx = {int(k.split(".")[1]) for k in state_dict if k.startswith("model.") and k.split(".")[1].isdigit()}
    if not idx:
        raise ValueError("state_dict has no 'model.<i>.' keys (expected an official YOLOv9 state dict)")
    head = max(idx) if head_index is None else check_int("head_index", head_index, minimum=n_main + 1)
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        parts = k.split(".", 2)
        if len(parts) < 3 or parts[0] != "model" or not parts[1].isdigit():
            continue
        i, rest = int(parts[1]), parts[2]
        if 1 <= i <= n_main:
            out[f"model.{i - 1}.{rest}"] = v
        elif i == head:
            for src, dst in _MAIN_HEAD:
                if rest.startswith(src):
                    out[f"model.{n_main}.{dst}{rest[len(src):]}"] = v
    if not any(k.startswith(f"model.{n_main}.cv2.") for k in out):
        raise ValueError(f"no main-head keys (cv4/cv5) found at layer {head}; is this a YOLOv9 PGI state dict?")
    return out
