"""Sweep results as Parquet: one file per finished trial, read as one dataset."""
