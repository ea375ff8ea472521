"""``python -m explore.sweep NAME [overrides]``: a Ray Tune + Optuna sweep of one search space."""
