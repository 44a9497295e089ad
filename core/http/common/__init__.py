"""Helpers every API shape shares; no routes of their own."""
