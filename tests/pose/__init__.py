"""Tests of the pose package."""
