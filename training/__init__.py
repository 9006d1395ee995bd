"""Training runs: the configuration (``config``), the kinds of run (``recipes``),
the run itself in named steps (``run``), its phases, checkpoints, optimizers,
distribution strategies, reports, diagnosis and mistakes.  Nothing is imported
at package level, so importing one module stays cheap."""
