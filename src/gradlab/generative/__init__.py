"""Generative-model methods and perceptual losses (MS-SSIM, arXiv 1511.06409), the shared tiny text-to-image model
(:mod:`~gradlab.generative.tiny`, :mod:`~gradlab.generative.model`, :mod:`~gradlab.generative.judge`,
:mod:`~gradlab.generative.cache`) and diffusion-model editing components built on diffusers.

Nothing here imports diffusers at package import time: the diffusers-based names below load on first access, and
using them without the ``generative`` extra raises ``ImportError`` naming it.
"""

from importlib import import_module
from typing import Any

from gradlab.generative.losses import MS_SSIM_WEIGHTS, MSSSIMLoss, gaussian_window, min_image_size, ms_ssim, ssim

_LAZY: dict[str, str] = {
    "cached_artifact": "gradlab.generative.cache",
    "T2IModel": "gradlab.generative.model",
    "load_t2i": "gradlab.generative.model",
    "final_layer_norm": "gradlab.generative.model",
    "ShapesBatch": "gradlab.generative.tiny",
    "make_shapes": "gradlab.generative.tiny",
    "build_tiny_tokenizer": "gradlab.generative.tiny",
    "build_tiny_t2i": "gradlab.generative.tiny",
    "load_tiny_t2i": "gradlab.generative.tiny",
    "ShapeJudge": "gradlab.generative.judge",
    "load_shape_judge": "gradlab.generative.judge",
    "PromptTuningInversion": "gradlab.generative.pti",
    "PTIResult": "gradlab.generative.pti",
    "interpolate_embeddings": "gradlab.generative.pti",
    "generation_accuracy": "gradlab.generative.judge",
    "tiny_t2i_path": "gradlab.generative.tiny",
    "AlignITController": "gradlab.generative.alignit",
    "AlignITAttnProcessor": "gradlab.generative.alignit",
    "install_alignit": "gradlab.generative.alignit",
    "NeTIMapper": "gradlab.generative.neti",
    "NeTITextEncoder": "gradlab.generative.neti",
    "NeTIAttnProcessor": "gradlab.generative.neti",
    "NeTIStore": "gradlab.generative.neti",
    "install_neti": "gradlab.generative.neti",
    "ControlNetRewardTrainer": "gradlab.generative.controlnet_pp",
    "ControlNetRewardLoss": "gradlab.generative.controlnet_pp",
    "controlnet_sample": "gradlab.generative.controlnet_pp",
    "naive_sampling_reward_loss": "gradlab.generative.controlnet_pp",
    "predict_original_sample": "gradlab.generative.controlnet_pp",
    "VAEDecoder": "gradlab.generative.controlnet_pp",
    "ConsistencyReward": "gradlab.generative.rewards",
    "SobelEdgeReward": "gradlab.generative.rewards",
    "SegmentationReward": "gradlab.generative.rewards",
    "DepthReward": "gradlab.generative.rewards",
    "sobel_gradients": "gradlab.generative.rewards",
}

__all__ = ["MS_SSIM_WEIGHTS", "MSSSIMLoss", "gaussian_window", "min_image_size", "ms_ssim", "ssim", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gradlab.generative' has no attribute {name!r}")
