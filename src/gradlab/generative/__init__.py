"""Generative-model methods and perceptual losses (MS-SSIM, arXiv 1511.06409).

Nothing here imports diffusers at package import time.
"""

from gradlab.generative.losses import MS_SSIM_WEIGHTS, MSSSIMLoss, gaussian_window, min_image_size, ms_ssim, ssim

__all__ = ["MS_SSIM_WEIGHTS", "MSSSIMLoss", "gaussian_window", "min_image_size", "ms_ssim", "ssim"]
