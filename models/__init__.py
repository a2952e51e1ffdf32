"""Recipes that build models for ovxai (torch needed; no weights are committed)."""
