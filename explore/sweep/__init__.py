"""``python -m explore.sweep NAME [overrides]``: a Ray Tune + Optuna sweep of one search space.

``driver`` runs a sweep, ``trial`` one configuration, ``search`` and ``study`` hold the
Optuna side, ``progress`` what the terminal shows. Import them directly (each pulls in Ray).
"""

__all__: list[str] = []
