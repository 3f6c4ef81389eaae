"""Sweeps: a sweep file's points and their run directories (definition), training them resumably on one or
more workers (running), and W&B agents (wandb_agents)."""
