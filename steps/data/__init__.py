"""Raw data to canonical records: file formats, loading, the leakage-safe split, dedup, the held-out set.

- config: the ingest step's settings (``IngestConfig``): the raw datasets and how to split them.
- convert: one row of a known dataset format mapped to the canonical record's fields.
- dedup: exact and near-duplicate groups, the rule both the split and the leakage gate use.
- errors: ``RecordError`` (one bad record) and ``FileError`` (one unreadable file).
- formats: format names, sharegpt role tags and format detection.
- heldout: the general held-out set (MT-Bench questions) for leakage and forgetting checks.
- load: one raw dataset read, mapped and quarantined for ingest.
- lsh: near-duplicate pairs from MinHash signatures (LSH banding, then verification).
- minhash: word shingles and MinHash signatures, bit-identical to ``datasketch.MinHash``.
- read: JSONL, JSON, CSV and Parquet files read into numbered rows.
- split: the leakage-safe split, duplicate groups kept together.
- splits: the split files' names, and ``load_splits`` for a folder of them.
"""

__all__ = ["config", "convert", "dedup", "errors", "formats", "heldout", "load", "lsh", "minhash", "read", "split", "splits"]
