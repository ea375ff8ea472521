"""explore: Ray-distributed hyperparameter exploration for long-tail image classification.

Layout follows the data flow: ``data`` (long-tail datasets) → ``backbone`` (architectures,
training loop, extraction) → ``store`` (feature cache on local disk or S3) → ``methods``
(pure method maths) → ``recipes`` (one home per method: params, knobs, plug-ins) →
``training`` (the generic loops the recipes plug into) → ``sweep`` (Hydra config, Ray Tune
+ Optuna) → ``results`` (Parquet layout, rows, reading) → ``analyze`` (verdicts, report).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
