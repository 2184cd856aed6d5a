"""rigl_jax: sparse training (RigL, SET, SNFS, Static, pruning) as optax transforms.

The core (this package's top level) depends only on jax, optax and numpy.
"""

from rigl_jax.distributions import DISTRIBUTIONS
from rigl_jax.distributions import sparsity_distribution
from rigl_jax.masks import apply_masks
from rigl_jax.masks import mask_sparsity
from rigl_jax import methods
from rigl_jax.methods import METHODS
from rigl_jax.methods import Method
from rigl_jax.methods import register as register_method
from rigl_jax.paths import default_is_sparse
from rigl_jax.paths import path_str
from rigl_jax.schedules import drop_fraction
from rigl_jax.schedules import MaskSchedule
from rigl_jax.schedules import pruning_sparsity
from rigl_jax.selection import top_k_mask
from rigl_jax.selection import top_k_masks
from rigl_jax.transform import CONFIG_FIELDS
from rigl_jax.transform import config_fields
from rigl_jax.transform import dense
from rigl_jax.transform import from_config
from rigl_jax.transform import get_masks
from rigl_jax.transform import granet
from rigl_jax.transform import get_sparse_state
from rigl_jax.transform import init_key
from rigl_jax.transform import masked_init
from rigl_jax.transform import pruning
from rigl_jax.transform import rigl
from rigl_jax.transform import set_
from rigl_jax.transform import set_ as set  # pylint: disable=redefined-builtin
from rigl_jax.transform import snfs
from rigl_jax.transform import SparseState
from rigl_jax.transform import SparseTransformation
from rigl_jax.transform import sparsify
from rigl_jax.transform import srigl
from rigl_jax.transform import static
from rigl_jax.transform import topkast
from rigl_jax.transform import DenseWeights

__version__ = '0.1.0'

__all__ = (
    'CONFIG_FIELDS', 'DISTRIBUTIONS', 'DenseWeights', 'METHODS', 'MaskSchedule', 'Method',
    'SparseState', 'SparseTransformation', 'apply_masks', 'config_fields',
    'default_is_sparse', 'dense', 'drop_fraction', 'from_config', 'get_masks',
    'get_sparse_state', 'granet', 'init_key', 'mask_sparsity',
    'masked_init', 'methods',
    'path_str', 'pruning', 'pruning_sparsity', 'register_method', 'rigl',
    'set', 'set_', 'snfs', 'sparsify', 'sparsity_distribution', 'srigl',
    'static', 'topkast',
    'top_k_mask', 'top_k_masks',
)
