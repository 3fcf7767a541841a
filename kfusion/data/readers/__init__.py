"""Readers: one module per data source format, each exposing ``READER``."""
