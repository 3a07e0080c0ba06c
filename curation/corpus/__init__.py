"""Corpus outputs: per-video result files (the resume marker), Parquet shards and `index.json`,
statistics, figures, the dataset card and the Hub upload."""
