"""YOLOv9 (Wang, Yeh, Liao 2024, arXiv 2402.13616): GELAN detectors and Programmable Gradient Information.

Own PyTorch implementation. The layer layout (``model.<i>`` keys, block attribute names) follows the official
GELAN/YOLOv9 configurations so that official state dicts load; the MIT-licensed official rewrite
(github.com/MultimediaTechLab/YOLO) guided the design of the auxiliary branch and the dual loss. No code of
either repository is copied. Needs ``torchvision`` (``torchvision.ops``) from the ``vision`` extra.
"""

try:
    import torchvision.ops  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("gradlab.detection needs torchvision (torchvision.ops); install the 'vision' extra: "
                      "pip install 'gradlab[vision]'") from exc

from gradlab.detection.assigner import TaskAlignedAssigner
from gradlab.detection.blocks import (
    ADown, AConv, CBFuse, CBLinear, Concat, Conv, ELAN1, RepConvN, RepNBottleneck, RepNCSP, RepNCSPELAN4, SPPELAN,
)
from gradlab.detection.boxes import box_iou, check_boxes, complete_box_iou, complete_box_iou_loss
from gradlab.detection.data import make_rectangle_scenes
from gradlab.detection.gelan import GELAN, GELANDetector, GELANSpec, LayerSpec, gelan_c, gelan_spec_c, gelan_spec_t, gelan_t
from gradlab.detection.heads import DFL, DDetect, DualDDetect, make_anchors
from gradlab.detection.loss import DetectionLoss, DualDetectionLoss
from gradlab.detection.metrics import detection_ap
from gradlab.detection.official import gelan_state_dict_from_yolov9
from gradlab.detection.pgi import YOLOv9PGI
from gradlab.detection.postprocess import postprocess

__all__ = [
    "ADown", "AConv", "CBFuse", "CBLinear", "Concat", "Conv", "DDetect", "DFL", "DetectionLoss", "DualDDetect",
    "DualDetectionLoss", "ELAN1", "GELAN", "GELANDetector", "GELANSpec", "LayerSpec", "RepConvN", "RepNBottleneck", "RepNCSP",
    "RepNCSPELAN4", "SPPELAN", "TaskAlignedAssigner", "YOLOv9PGI", "box_iou", "check_boxes", "complete_box_iou",
    "complete_box_iou_loss", "detection_ap", "gelan_c", "gelan_spec_c", "gelan_state_dict_from_yolov9", "gelan_spec_t", "gelan_t", "make_anchors",
    "make_rectangle_scenes", "postprocess",
]
