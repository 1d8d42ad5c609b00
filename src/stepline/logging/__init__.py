"""Logging helpers kept for code ported from Neuraxle (``neuraxle.logging``)."""
