"""Long-context evaluation: the streaming engine, tasks, plots and reports."""
