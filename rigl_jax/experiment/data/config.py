"""Default data configs, one per dataset."""

from __future__ import annotations

import ml_collections

from rigl_jax.experiment.data import base

check_name = base.check_name


def default_data_config(name: str) -> ml_collections.ConfigDict:
  """The default `config.data` for a dataset.

  Fields:
    name: one of `DATASETS`.
    source: 'bundled' (files shipped with rigl_jax; fashion_mnist and
      shakespeare) or 'tfds' (tensorflow-datasets, prepared in
      `tfds_data_dir`).
    batch_size: GLOBAL train batch size, split evenly over processes.
    eval_batch_size: GLOBAL eval batch size.
    image_size: height = width of the images fed to the model; only
      imagenet2012 resizes to it, the others have their native size here.
    seq_len: characters per sequence (text only; 0 for images).
    train_fraction: train on the first fraction of the train set, in (0, 1].
    tfds_data_dir: tfds data folder (None: the tfds default).
    shuffle_buffer: tf.data shuffle buffer (tfds only; bundled data is
      permuted whole every epoch).
    vocab_size, max_corpus_chars, token_dir: tokenized text only (`lm1b`):
      the SentencePiece vocabulary's size (30,000), the train characters
      it is trained on (10**7) and where the vocabulary and token files are
      kept (None: next to the tfds data); see `tfds_text`.

  Args:
    name: one of `DATASETS`.

  Returns:
    A fresh ConfigDict.

  Raises:
    ValueError: unknown name.
  """
  check_name(name)
  spec = base.SPECS[name]
  config = ml_collections.ConfigDict()
  config.name = name
  config.source = spec.sources[0]
  config.batch_size = spec.batch_size
  config.eval_batch_size = spec.eval_batch_size
  config.image_size = spec.image_size
  config.seq_len = spec.seq_len
  config.train_fraction = 1.0
  config.tfds_data_dir = ml_collections.config_dict.placeholder(str)
  config.shuffle_buffer = spec.shuffle_buffer
  if name in base.TOKENIZED:
    config.vocab_size = spec.num_classes
    config.max_corpus_chars = 10**7
    config.token_dir = ml_collections.config_dict.placeholder(str)
  return config
