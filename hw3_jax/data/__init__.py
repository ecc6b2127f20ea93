"""The data room: labelled text -> token ids -> batches (and what is built on them).

  errors        DataError, the one error type (a ValueError with one clear line)
  net           the network probe run before a download; hub_files: a hub repo's files
  imdb          the official IMDB archive, tensorflow-datasets, the 70/30 split
  synthetic     the embedded order-dependent review set
  sources       config.data -> RawDataset (which source, its cache identity)
  tokenizer     pretrained and trained WordPiece tokenizers (training is deterministic)
  token_cache   token ids of a split, cached on disk by source, split, tokenizer, length
  batching      buckets, BucketedBatches, the prefetch thread, batches of free texts
  pipeline      get_datasets(config, workdir) -> SentimentData, the training loop's data
  encoder_cache a frozen encoder's outputs computed once (CachedEncoderData)
  word_vectors  PPMI + SVD word vectors for an encoder trained from scratch
  images        Q1's image splits (digits / MNIST) and their batches (ImageData)
"""
