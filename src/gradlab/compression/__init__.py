"""Network compression: jointly learnable codebooks and mappings (JLCM, arXiv 2309.17361) and quantisation
baselines, with real storage (bit-packed indices, fp16 codebooks).

    >>> jlcm = JLCM(bits=2, groups=8).fit(model, calibration_inputs)   # doctest: +SKIP
    >>> small = jlcm.compressed_.to_module(); jlcm.compressed_.storage().bits_per_weight   # doctest: +SKIP
"""

from gradlab.compression.baselines import kmeans_quantize, uniform_quantize
from gradlab.compression.grouping import neuron_order, row_signatures
from gradlab.compression.jlcm import JLCM, ReorderWarning
from gradlab.compression.joint import JointConfig, learn_codebooks_and_mappings, relative_output_error
from gradlab.compression.kmeans import KMeans1DResult, kmeans_1d, nearest_codeword
from gradlab.compression.metrics import layer_output_errors, prediction_kl, weight_errors
from gradlab.compression.model import CompressedModel, StorageReport, compressible_layers
from gradlab.compression.packing import pack_indices, packed_nbytes, unpack_indices
from gradlab.compression.permute import ReorderPlan, apply_permutation, plan_reordering
from gradlab.compression.storage import (
    CompressedWeight,
    bits_per_weight_formula,
    group_sizes,
    row_groups,
    storage_bytes_formula,
)

__all__ = [
    "JLCM", "ReorderWarning", "kmeans_quantize", "uniform_quantize",
    "CompressedModel", "CompressedWeight", "StorageReport", "compressible_layers",
    "bits_per_weight_formula", "storage_bytes_formula", "group_sizes", "row_groups",
    "pack_indices", "unpack_indices", "packed_nbytes",
    "kmeans_1d", "KMeans1DResult", "nearest_codeword",
    "neuron_order", "row_signatures", "ReorderPlan", "plan_reordering", "apply_permutation",
    "JointConfig", "learn_codebooks_and_mappings", "relative_output_error",
    "layer_output_errors", "weight_errors", "prediction_kl",
]
