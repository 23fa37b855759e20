"""Scoring generators against real data, and the pages and tables that show the figures."""
