"""Evaluators: GRES / RES / Co-SOD metrics on the canonical format."""
