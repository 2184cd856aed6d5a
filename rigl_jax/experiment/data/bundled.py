"""Data files bundled with rigl_jax, each read only after its SHA-256 checks.

The bundled files live in `rigl_jax/experiment/data/files/` (see the
`README.md` there
for their sources and licenses). Every file has its SHA-256 pinned here, so a
truncated download, a bad checkout or a git-lfs pointer left in place of the
real file fails loudly with one `ValueError` instead of training on garbage.
"""

from __future__ import annotations

import hashlib
import pathlib

# Folder of the bundled files. Loaders take a `data_dir` argument that
# defaults to this; tests point them at a copy instead.
BUNDLED_DIR = pathlib.Path(__file__).resolve().parent / 'files'

# File name -> SHA-256 (hex) of the file as shipped.
SHA256 = {
    # Fashion-MNIST (Zalando SE, MIT): the original IDX files, xz-compressed.
    'fashion_mnist/train-images-idx3-ubyte.xz':
        'fa573e1bd2da2e8b9754eda018b3d9662a98b99ae084adfc28a4aeb51cf413db',
    'fashion_mnist/train-labels-idx1-ubyte.xz':
        '899cfccfc14b42421490dd916e473f9c15a44220b6bfe8a9487e72ae975f21e1',
    'fashion_mnist/t10k-images-idx3-ubyte.xz':
        'dc9254d8b9d646e31d4011433945c82f0924763fc16e88307b15403cb2fc7770',
    'fashion_mnist/t10k-labels-idx1-ubyte.xz':
        '021b917698d98519478373f5e750f488b1c3f9d7704f711479bdd670a04bee18',
    # Shakespeare's works (Open Knowledge Foundation `shakespeare` 0.6,
    # CC-BY 2.5): the 42 `*_gut.txt` texts concatenated, xz-compressed.
    'shakespeare/shakespeare_gut.txt.xz':
        'a2f780bbaca16aca04f2c5919f1f0139952b372cb1874396326bc3b0b9c34371',
}


def read_verified(name: str, data_dir: pathlib.Path | str | None = None,
                  ) -> bytes:
  """Reads a bundled file after checking its SHA-256.

  Args:
    name: the file's key in `SHA256`, relative to `data_dir`.
    data_dir: folder holding the bundled files; `BUNDLED_DIR` if None.

  Returns:
    The file's (still compressed) bytes.

  Raises:
    ValueError: the file is missing, unreadable, or its checksum differs.
  """
  expected = SHA256[name]
  path = pathlib.Path(data_dir or BUNDLED_DIR) / name
  fix = ('reinstall rigl_jax or restore the file from the repository '
         f'(`git checkout -- rigl_jax/experiment/data/files/{name}`; '
         'with git-lfs, `git lfs pull`)')
  try:
    data = path.read_bytes()
  except OSError as e:
    raise ValueError(
        f'bundled data file {path} cannot be read ({e.strerror}); expected '
        f'SHA-256 {expected}; to fix, {fix}') from e
  actual = hashlib.sha256(data).hexdigest()
  if actual != expected:
    raise ValueError(
        f'bundled data file {path} is corrupted: expected SHA-256 {expected}, '
        f'actual {actual}; to fix, {fix}')
  return data
