"""Verinet."""
