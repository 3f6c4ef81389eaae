"""What is drawn from the store: the tables (tables), the figures (figures), the leaderboard and its gradient
columns (leaderboard, gradient_quality), runs side by side (compare), the timings (bench, step_cost)."""
