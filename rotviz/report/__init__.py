"""Figures and tables: drawing and formatting only."""
