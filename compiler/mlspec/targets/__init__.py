"""Targets: the systems a plan is applied to, behind one small interface."""
