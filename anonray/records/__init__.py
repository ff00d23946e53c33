"""Records: the Parquet tables, regions, run manifests and `anonray verify`, resume, the review sheet, metrics."""
