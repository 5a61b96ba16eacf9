"""Plots and tables from metrics files (matplotlib, headless)."""
