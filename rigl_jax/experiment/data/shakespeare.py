"""Character-level Shakespeare, bundled with rigl_jax (no download).

The corpus is the 42 modern-spelling (`*_gut.txt`) texts of the Open Knowledge
Foundation's `shakespeare` 0.6 package (CC-BY 2.5), concatenated in sorted
file-name order. The vocabulary is the sorted set of the corpus's characters.
The corpus is split by character position: the first 90% trains, the next 5%
validates, the last 5% tests.

An example is a window of `seq_len + 1` consecutive characters: `inputs` are
its first `seq_len`, `targets` its last `seq_len` (the next character at each
position). Eval splits are cut into consecutive windows starting at 0 (stride
`seq_len`, so every character but a short tail is predicted exactly once).
Train windows use the same stride but start at an offset in `[0, seq_len)`
drawn per epoch, so that window borders move between epochs.
"""

from __future__ import annotations

import functools
import lzma
import pathlib
from typing import NamedTuple

import numpy as np

from rigl_jax.experiment.data import base
from rigl_jax.experiment.data import bundled
from rigl_jax.experiment.data import in_memory

FILE = 'shakespeare/shakespeare_gut.txt.xz'
# Split name -> (start, end) as fractions of the corpus length.
SPLITS = {'train': (0.0, 0.9), 'validation': (0.9, 0.95), 'test': (0.95, 1.0)}


class Vocabulary(NamedTuple):
  """Characters <-> integer ids.

  Attributes:
    chars: the vocabulary in id order (sorted).
  """

  chars: str

  def encode(self, text: str) -> np.ndarray:
    """Text -> int32 ids; raises ValueError on characters not in the vocab."""
    codes = np.frombuffer(text.encode('utf-32-le'), np.uint32)
    table = np.frombuffer(self.chars.encode('utf-32-le'), np.uint32)
    ids = np.searchsorted(table, codes)
    bad = (ids >= len(table)) | (table[np.minimum(ids, len(table) - 1)]
                                 != codes)
    if bad.any():
      unknown = sorted(set(np.asarray(list(text))[bad]))
      raise ValueError(f'characters not in the vocabulary: {unknown}')
    return ids.astype(np.int32)

  def decode(self, ids: np.ndarray) -> str:
    """int ids -> text."""
    return ''.join(self.chars[i] for i in np.asarray(ids).ravel())


class Corpus(NamedTuple):
  """The encoded corpus.

  Attributes:
    vocab: the character vocabulary.
    ids: uint8 ids of the whole corpus, in order.
  """

  vocab: Vocabulary
  ids: np.ndarray

  def split(self, name: str) -> np.ndarray:
    """The ids of one split ('train', 'validation' or 'test')."""
    if name not in SPLITS:
      raise ValueError(f'unknown Shakespeare split {name!r}; valid splits: '
                       f'{", ".join(SPLITS)}')
    lo, hi = SPLITS[name]
    n = len(self.ids)
    return self.ids[int(lo * n):int(hi * n)]


@functools.lru_cache(maxsize=2)
def load(data_dir: pathlib.Path | str | None = None) -> Corpus:
  """Loads and encodes the bundled corpus.

  Args:
    data_dir: folder of the bundled files; `bundled.BUNDLED_DIR` if None.

  Returns:
    The `Corpus` (about 5.06M characters, 84 distinct).

  Raises:
    ValueError: the bundled file fails its checksum.
  """
  text = lzma.decompress(bundled.read_verified(FILE, data_dir)).decode('utf-8')
  vocab = Vocabulary(''.join(sorted(set(text))))
  ids = vocab.encode(text).astype(np.uint8 if len(vocab.chars) <= 256
                                  else np.int32)
  ids.flags.writeable = False
  return Corpus(vocab, ids)


def _windows(ids: np.ndarray, starts: np.ndarray, seq_len: int) -> base.Batch:
  """Windows of `seq_len + 1` ids at `starts`, as inputs/targets."""
  window = ids[starts[:, None] + np.arange(seq_len + 1)].astype(np.int32)
  return {'inputs': window[:, :-1], 'targets': window[:, 1:]}


def get_data(*, batch_size: int, eval_batch_size: int, seq_len: int,
             train_fraction: float, seed: int, process_index: int,
             process_count: int,
             data_dir: pathlib.Path | str | None = None) -> base.Data:
  """Bundled Shakespeare as in-memory train and eval streams.

  Args:
    batch_size: global train batch size (sequences).
    eval_batch_size: global eval batch size (sequences).
    seq_len: characters per sequence.
    train_fraction: train on the first `train_fraction` of the train text.
    seed: data seed; the train order and offsets depend only on it.
    process_index: this process's index.
    process_count: number of processes.
    data_dir: folder of the bundled files; `bundled.BUNDLED_DIR` if None.

  Returns:
    The `Data`, with eval splits 'validation' and 'test'.
  """
  corpus = load(data_dir)
  splits = {s: corpus.split(s)
            for s in ('train',) + base.SPECS['shakespeare'].eval_splits}
  return windowed_data(
      'shakespeare', splits, len(corpus.vocab.chars), batch_size=batch_size,
      eval_batch_size=eval_batch_size, seq_len=seq_len,
      train_fraction=train_fraction, seed=seed, process_index=process_index,
      process_count=process_count)


def windowed_data(name: str, splits: dict[str, np.ndarray], vocab_size: int,
                  *, batch_size: int, eval_batch_size: int, seq_len: int,
                  train_fraction: float, seed: int, process_index: int,
                  process_count: int) -> base.Data:
  """Token streams as windows of ``seq_len + 1`` ids: train and eval streams.

  Training visits the non-overlapping windows of the (``train_fraction``-
  cut) train ids in a new order every epoch, shifted by a random offset in
  ``[0, seq_len)`` per epoch; both depend only on ``(seed, epoch)``, so a
  stream resumed at any step is the same stream. Eval splits are read as
  consecutive windows.

  Args:
    name: the dataset's name.
    splits: 'train' and each eval split -> its ids (1-d; may be memory maps).
    vocab_size: the vocabulary's size (``info.num_classes``).
    batch_size: global train batch size (sequences).
    eval_batch_size: global eval batch size (sequences).
    seq_len: ids per sequence.
    train_fraction: train on the first `train_fraction` of the train ids.
    seed: data seed.
    process_index: this process's index.
    process_count: number of processes.

  Returns:
    The `Data`: batches of 'inputs' and 'targets' (int32, ``[b, seq_len]``).
  """
  if seq_len < 1:
    raise ValueError(f'seq_len must be >= 1, got {seq_len}')
  train = splits['train']
  train = train[:max(1, int(len(train) * train_fraction))]
  # Any offset in [0, seq_len) leaves room for this many windows.
  num_train = (len(train) - seq_len) // seq_len
  if num_train < 1:
    raise ValueError(f'train text of {len(train)} tokens is too short '
                     f'for seq_len {seq_len}; raise train_fraction')
  evals = {s: ids for s, ids in splits.items() if s != 'train'}

  def train_batch(epoch: int, idx: np.ndarray) -> base.Batch:
    offset = np.random.default_rng([seed, epoch, 1]).integers(seq_len)
    return _windows(train, offset + idx * seq_len, seq_len)

  def train_batches(start_step: int):
    return in_memory.train_stream(
        num_train, train_batch, batch_size=batch_size, seed=seed,
        start_step=start_step, process_index=process_index,
        process_count=process_count)

  def eval_batches(split: str):
    base.check_split(split, info.num_eval)
    ids = evals[split]
    return in_memory.eval_stream(
        info.num_eval[split],
        lambda epoch, idx: _windows(ids, idx * seq_len, seq_len),
        batch_size=eval_batch_size, process_index=process_index,
        process_count=process_count)

  info = base.DatasetInfo(
      name=name, kind='text', input_shape=(seq_len,),
      num_classes=vocab_size, num_train=num_train,
      num_eval={s: (len(v) - 1) // seq_len for s, v in evals.items()})
  return base.Data(info, train_batches, eval_batches)
