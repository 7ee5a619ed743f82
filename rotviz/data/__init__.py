"""Data sources, records, preprocessing, the rotation task and uploaded images."""
