"""Helpers shared by the reliability drills (tests/test_drill_*.py); see docs/reliability.md."""
