"""Numerical kernels with their baselines (two-pass softmax, arXiv 2001.04438).

The kernels are numba code (the ``kernels`` extra); numba is imported on first call, not at import.
"""

from gradlab.kernels.bandwidth import (cache_sizes, interleaved_times, last_level_cache, stream_read, stream_scale,
                                       stream_scale_inplace)
from gradlab.kernels.softmax import (KERNEL_BYTES_PER_ELEMENT, softmax_three_pass_recompute, softmax_three_pass_reload,
                                     softmax_two_pass)

__all__ = ["KERNEL_BYTES_PER_ELEMENT", "cache_sizes", "interleaved_times", "last_level_cache",
           "softmax_three_pass_recompute", "softmax_three_pass_reload", "softmax_two_pass", "stream_read",
           "stream_scale", "stream_scale_inplace"]
