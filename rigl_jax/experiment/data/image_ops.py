"""TensorFlow image preprocessing for the tfds pipelines.

Every random op is stateless and takes its seed as an argument, so an example's
augmentation depends only on (data seed, process, position in the stream):
the stream is reproducible and can be resumed by skipping examples.

References:
  Szegedy et al., Going Deeper with Convolutions, CVPR 2015 (random-resized
    "Inception" crop).
  He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (CIFAR
    pad-and-crop, ImageNet center crop).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

CIFAR_PADDING = 4
CROP_PADDING = 32


def normalize(image: tf.Tensor, mean: Sequence[float],
              std: Sequence[float]) -> tf.Tensor:
  """Pixels in [0, 255] -> float32 standardized per channel.

  Args:
    image: (H, W, C) image, any real or integer dtype, values in [0, 255].
    mean: per-channel mean of pixels scaled to [0, 1].
    std: per-channel std of pixels scaled to [0, 1].

  Returns:
    float32 (H, W, C) image.
  """
  image = tf.cast(image, tf.float32) / 255.0
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def pad_crop_flip(image: tf.Tensor, seed: tf.Tensor,
                  padding: int = CIFAR_PADDING) -> tf.Tensor:
  """CIFAR augmentation: zero-pad, random crop back to size, random flip.

  Args:
    image: (H, W, C) image.
    seed: int64 (2,) stateless seed.
    padding: pixels of zero padding on each side.

  Returns:
    The augmented (H, W, C) image, same dtype.
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  height, width, channels = image.shape
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  image = tf.image.stateless_random_crop(
      padded, [height, width, channels], seed=crop_seed)
  return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bicubic resize to (size, size), clipped back to [0, 255]."""
  image = tf.image.resize(image, [size, size], method='bicubic')
  return tf.clip_by_value(image, 0.0, 255.0)


def decode_and_center_crop(image_bytes: tf.Tensor, size: int,
                           crop_padding: int = CROP_PADDING) -> tf.Tensor:
  """ImageNet eval: central crop of `size / (size + crop_padding)`, resized.

  Args:
    image_bytes: encoded (JPEG/PNG) image.
    size: output height and width.
    crop_padding: the crop keeps `size / (size + crop_padding)` of the
      shorter side.

  Returns:
    float32 (size, size, 3) image with values in [0, 255].
  """
  shape = tf.image.extract_jpeg_shape(image_bytes)
  height, width = shape[0], shape[1]
  crop = tf.cast(size / (size + crop_padding) *
                 tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  top = (height - crop + 1) // 2
  left = (width - crop + 1) // 2
  image = tf.image.decode_and_crop_jpeg(
      image_bytes, tf.stack([top, left, crop, crop]), channels=3)
  return _resize(image, size)


def decode_and_random_crop(image_bytes: tf.Tensor, size: int,
                           seed: tf.Tensor) -> tf.Tensor:
  """ImageNet train: Inception-style random-resized crop, resized, flipped.

  Samples a crop covering 8% to 100% of the image with aspect ratio in
  [3/4, 4/3] (`tf.image.stateless_sample_distorted_bounding_box`, 10
  attempts); if no attempt fits, falls back to the eval center crop.

  Args:
    image_bytes: encoded (JPEG/PNG) image.
    size: output height and width.
    seed: int64 (2,) stateless seed.

  Returns:
    float32 (size, size, 3) image with values in [0, 255].
  """
  box_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  shape = tf.image.extract_jpeg_shape(image_bytes)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=box_seed, min_object_covered=0.1,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  # The op returns the whole image when every attempt failed.
  failed = tf.reduce_all(tf.equal(crop_size[:2], shape[:2]))
  image = tf.cond(
      failed,
      lambda: decode_and_center_crop(image_bytes, size),
      lambda: _resize(tf.image.decode_and_crop_jpeg(
          image_bytes, window, channels=3), size))
  return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
