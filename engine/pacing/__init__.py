"""Pacing: frequency caps with priorities, and quiet hours (docs/caps.md)."""
