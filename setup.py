"""rigl_jax: sparse training in JAX (RigL, SET, SNFS, Static, pruning)."""

import setuptools

CORE = ['jax>=0.4.30', 'optax>=0.2.3', 'numpy>=1.24']
EXPERIMENTS = [
    'flax>=0.10', 'ml_collections>=0.1.1', 'clu>=0.0.12', 'tensorboard>=2.16',
    'orbax-checkpoint>=0.6', 'absl-py>=2.0', 'tensorflow-cpu>=2.16',
    'tensorflow-datasets>=4.9', 'matplotlib>=3.7', 'pandas>=2.0',
    'tabulate>=0.9', 'sentencepiece>=0.2', 'numba>=0.59',
]
TEST = ['pytest>=8', 'pytest-xdist>=3', 'hypothesis>=6.100']
DOCS = ['sphinx>=7', 'myst-parser>=3', 'furo>=2024.1']

setuptools.setup(
    name='rigl_jax',
    version='0.1.0',
    description=('Sparse training from scratch (RigL, SET, SNFS, Static, '
                 'gradual pruning) as optax transforms for Flax models.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=setuptools.find_packages(include=['rigl_jax', 'rigl_jax.*']),
    package_data={'rigl_jax.experiment.data': ['files/README.md', 'files/*/*.xz']},
    python_requires='>=3.10',
    install_requires=CORE,
    extras_require={
        'experiments': EXPERIMENTS,
        'test': EXPERIMENTS + TEST,
        'docs': EXPERIMENTS + DOCS,
    },
)
