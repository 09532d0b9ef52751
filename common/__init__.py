"""Pieces shared by every package of the worker; depends on nothing of ours."""
