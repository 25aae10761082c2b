"""Training procedures that change how gradients are used (TrAct, target surrogates, gradient-boosted nets,
NoProp, WTA-CRS linear layers).
"""

from gradlab.training.noprop import NoPropDT, NoPropMLPBlock, check_alpha_bar, cosine_alpha_bar, posterior_coefficients
from gradlab.training.saved_memory import saved_tensor_bytes
from gradlab.training.tract import TrAct, tract_weight_grad
from gradlab.training.wta_crs import WTACRSLinear, convert_linear, estimate_gtx

__all__: list[str] = []
__all__ += ["TrAct", "tract_weight_grad"]
__all__ += ["WTACRSLinear", "convert_linear", "estimate_gtx", "saved_tensor_bytes"]

from gradlab.training.sso import SSO, TargetSurrogate  # noqa: E402

__all__ += ["SSO", "TargetSurrogate"]
__all__ += ["NoPropDT", "NoPropMLPBlock", "check_alpha_bar", "cosine_alpha_bar", "posterior_coefficients"]

from gradlab.training.noprop_continuous import MonotoneSNR, NoPropCT, NoPropFM, NoPropTimeBlock  # noqa: E402

__all__ += ["MonotoneSNR", "NoPropCT", "NoPropFM", "NoPropTimeBlock"]

from gradlab.training.gbnn import GradientBoostedNetClassifier, GradientBoostedNetRegressor  # noqa: E402

__all__ += ["GradientBoostedNetClassifier", "GradientBoostedNetRegressor"]
