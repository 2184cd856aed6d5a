"""Token-level text from tfds (lm1b): a SentencePiece vocabulary, token files.

The first run prepares, once per dataset and vocabulary size, in
``config.data.token_dir`` (default: ``<tfds data dir>/<name>/<version>/
rigl_jax_sp<vocab_size>``):

* ``spm.model``: a unigram SentencePiece model trained on the first
  ``config.data.max_corpus_chars`` characters of the train split, as the Flax
  lm1b example does (`flax/examples/lm1b/tokenizer.py`: vocabulary 30,000,
  10**7 characters, character coverage 1.0, id 0 padding, id 1 end of
  sentence). Trained on one thread, so every host of a multi-host run that
  prepares its own files gets the same vocabulary.
* ``<split>.bin``: every example of the split tokenized, an end-of-sentence
  id after each, concatenated in the split's order (uint16).

Training and evaluation then read the token files memory-mapped, cut into
windows of ``seq_len + 1`` tokens exactly as the bundled character-level
Shakespeare corpus is (`rigl_jax.experiment.data.shakespeare`): the train
order is a permutation of the windows per epoch with a random offset, so a
resumed run gets the same batches at O(1) cost, and each process reads its
share. Examples are packed across sentence boundaries (the model sees the
end-of-sentence token between them), as in the Flax example's packed
training.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from rigl_jax.experiment.data import base
from rigl_jax.experiment.data import shakespeare

# The text feature of each tokenized dataset.
TEXT_FEATURE = {'lm1b': 'text'}
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
_ENCODE_CHUNK = 10_000


def _prepared_builder(config: ml_collections.ConfigDict):
  builder = tfds.builder(config.name, data_dir=config.get('tfds_data_dir'))
  try:
    builder.as_dataset(split='train')
  except AssertionError as e:  # What tfds raises for unprepared data.
    raise ValueError(
        f'tfds dataset {config.name!r} is not prepared in {builder.data_dir}; '
        'set config.data.tfds_data_dir to a folder where it is (prepare one '
        f'with `tfds build {config.name} --data_dir=DIR`)') from e
  return builder


def _texts(builder, split: str) -> Iterator[str]:
  key = TEXT_FEATURE[builder.name]
  ds = builder.as_dataset(split=split, shuffle_files=False)
  for example in ds.as_numpy_iterator():
    yield example[key].decode('utf-8')


def token_dir(config: ml_collections.ConfigDict, builder=None) -> str:
  """Where a tokenized dataset's vocabulary and token files live."""
  if config.get('token_dir'):
    return str(config.token_dir)
  builder = builder or _prepared_builder(config)
  return os.path.join(builder.data_dir, f'rigl_jax_sp{config.vocab_size}')


def _atomic_write(path: str, write) -> None:
  folder = os.path.dirname(path)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp_')
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def train_tokenizer(texts: Iterator[str], vocab_size: int, path: str,
                    max_corpus_chars: int) -> None:
  """Trains a unigram SentencePiece model on the first characters of texts.

  Args:
    texts: example texts, in order.
    vocab_size: the vocabulary's size, special ids included.
    path: where the model is written (atomically).
    max_corpus_chars: characters of `texts` to train on.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  folder = os.path.dirname(path)
  with tempfile.TemporaryDirectory(dir=folder) as tmp:
    corpus = os.path.join(tmp, 'corpus.txt')
    chars = 0
    with open(corpus, 'w', encoding='utf-8') as f:
      for text in texts:
        line = text.replace('\n', ' ')
        f.write(line + '\n')
        chars += len(line)
        if chars >= max_corpus_chars:
          break
    prefix = os.path.join(tmp, 'spm')
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, vocab_size=vocab_size,
        model_type='unigram', character_coverage=1.0, pad_id=PAD_ID,
        eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1, num_threads=1,
        shuffle_input_sentence=False, hard_vocab_limit=False,
        minloglevel=2)
    _atomic_write(path, lambda tmp_path: os.replace(prefix + '.model',
                                                    tmp_path))


def tokenize(texts: Iterator[str], model_path: str, path: str) -> int:
  """Writes the token ids of texts (an end of sentence after each) to path.

  Returns:
    The number of tokens written.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  sp = spm.SentencePieceProcessor(model_file=model_path)
  if sp.get_piece_size() > 2**16:
    raise ValueError(f'vocabulary of {sp.get_piece_size()} pieces does not '
                     'fit the uint16 token files; use vocab_size <= 65536')
  count = 0

  def write(tmp_path):
    nonlocal count
    with open(tmp_path, 'wb') as f:
      chunk = []
      for text in texts:
        chunk.append(text)
        if len(chunk) == _ENCODE_CHUNK:
          count += _write_chunk(f, sp, chunk)
          chunk = []
      count += _write_chunk(f, sp, chunk)

  _atomic_write(path, write)
  return count


def _write_chunk(f, sp, chunk: list[str]) -> int:
  if not chunk:
    return 0
  ids = np.fromiter(
      (t for seq in sp.encode(chunk) for t in (*seq, EOS_ID)), np.uint16)
  f.write(ids.tobytes())
  return ids.size


def prepare(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """The vocabulary and token files of ``config``'s dataset, made if missing.

  Args:
    config: a resolved data config (`name`, `vocab_size`,
      `max_corpus_chars`, `token_dir`, `tfds_data_dir`).

  Returns:
    Split name -> its tokens (a read-only memory map), for 'train' and the
    dataset's eval splits; and ``'vocab_size'`` -> the vocabulary's size (a
    0-d array).
  """
  builder = _prepared_builder(config)
  folder = token_dir(config, builder)
  os.makedirs(folder, exist_ok=True)
  model = os.path.join(folder, 'spm.model')
  if not os.path.exists(model):
    train_tokenizer(_texts(builder, 'train'), config.vocab_size, model,
                    config.max_corpus_chars)
  meta_path = os.path.join(folder, 'meta.json')
  meta = {}
  if os.path.exists(meta_path):
    with open(meta_path, encoding='utf-8') as f:
      meta = json.load(f)
  out = {}
  for split in ('train',) + base.SPECS[config.name].eval_splits:
    path = os.path.join(folder, f'{split}.bin')
    if not os.path.exists(path) or split not in meta:
      meta[split] = tokenize(_texts(builder, split), model, path)
      _atomic_write(meta_path, lambda p: _dump(meta, p))
    tokens = np.memmap(path, np.uint16, 'r')
    if tokens.size != meta[split]:
      raise ValueError(f'{path} holds {tokens.size} tokens, not the '
                       f'{meta[split]} its meta.json records; delete '
                       f'{folder} to tokenize again')
    out[split] = tokens
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  out['vocab_size'] = np.asarray(
      spm.SentencePieceProcessor(model_file=model).get_piece_size())
  return out


def _dump(meta, path):
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(meta, f)


def get_data(config: ml_collections.ConfigDict, *, seed: int,
             process_index: int, process_count: int) -> base.Data:
  """A tokenized tfds text dataset as train and eval streams.

  Args:
    config: the data config (see
      `rigl_jax.experiment.data.default_data_config`).
    seed: data seed; the train order and offsets depend only on it.
    process_index: this process's index.
    process_count: number of processes.

  Returns:
    The `Data`: windows of ``seq_len`` tokens ('inputs') and the next token
    at each position ('targets'); ``info.num_classes`` is the vocabulary's
    size.
  """
  splits = prepare(config)
  vocab_size = int(splits.pop('vocab_size'))
  return shakespeare.windowed_data(
      config.name, splits, vocab_size, batch_size=config.batch_size,
      eval_batch_size=config.eval_batch_size, seq_len=config.seq_len,
      train_fraction=config.train_fraction, seed=seed,
      process_index=process_index, process_count=process_count)

