"""Runs over a split (goodness, consistency, sanity, neurons, probe) and study files."""
