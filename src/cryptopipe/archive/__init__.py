"""Archive stage: warehouse load, lineage manifest, archive copy of raw, retention, run metrics."""
