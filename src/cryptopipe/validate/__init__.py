"""Validate stage: the Great Expectations quality gate between staging and validated snapshots.

Nothing here imports Great Expectations or pandas at module import time; ``stage.run`` does, lazily.
"""
