"""Training runs: model assembly, optimizers and schedules, callbacks, run
directories and reports.  Kept free of heavy imports at package level so
that ``core.errors`` is cheap to import."""
