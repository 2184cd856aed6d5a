"""LeNet-300-100 on the bundled Fashion-MNIST: the paper's MNIST setup, CPU-sized.

The paper's appendix trains LeNet-300-100 on MNIST with each method; this
runs the same model on Fashion-MNIST in about a minute per 10 epochs here.
Arguments as the paper configs (method, dist, sparsity, mult).
"""

from configs import default
from configs import paper


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='erk', sparsity='0.9', mult='1')
  config = default.get_config()
  config.model.name = 'lenet_300_100'
  config.model.kwargs = {}
  config.num_epochs = 10.0
  config.training_multiplier = a['mult']
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'], update_freq=100,
      first_layer=None)
  return config
