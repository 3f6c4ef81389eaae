"""The run store, the bottom floor: the run directory's files (run_dir), a run's metrics into them and W&B
(tracking), and what the reports read back from them: curves, finals, selection, provenance (records)."""
