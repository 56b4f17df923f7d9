"""Dataset pipeline: videos -> training stories (the Lay2Story-1M recipe), run as ``python -m training.data.build``.

Modules: ``video`` (PyAV sampling), ``kmeans`` (near-duplicate removal), ``grouping`` (4/5/6-frame sequences,
references), ``captions`` / ``http_captioner`` / ``transformers_captioner`` (captioners), ``filters`` (aesthetic /
safety hooks), ``config``, ``fetch`` (video folders, video lists and fetchers), ``process`` (the stage functions and
one video in one process), ``ray_engine`` (the same stages on Ray Data), ``shards`` (shards, manifest, stats),
``build`` (CLI). Nothing heavy is imported here, so ``training.data.dataset`` stays cheap to import.
"""
