"""Run folders: ``bench.runs.folder`` owns their layout, identity, records and state."""
