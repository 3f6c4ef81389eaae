"""Training a run: the tasks behind one interface (tasks), the temperature (schedules), the optimisers per
replica (optim), the step as one compiled graph (compiled_step), the gradient diagnostics it logs
(diagnostics), and the loop that writes a run directory (trainer)."""
