"""The shared core every stage depends on (stages never depend on each other)."""
