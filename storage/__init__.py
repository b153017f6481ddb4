"""Run layout, zarr array stores, parquet tables and atomic per-video commits."""
