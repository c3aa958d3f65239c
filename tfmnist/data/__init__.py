"""Data: records (schema, shards, info.json), the dataset catalog, source readers,
preparation, the tf.data pipeline, pixel conversions, augmentation and photos."""
