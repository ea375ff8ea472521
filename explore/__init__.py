"""explore: Ray-distributed hyperparameter exploration for long-tail image classification.

Layout follows the data flow: ``data`` (long-tail datasets) -> ``store`` (feature
cache on local disk or S3) -> ``methods`` (pure method math) -> ``training`` (fit
loops composing the methods) -> ``sweep`` (Ray Tune + Optuna) -> ``results``
(Parquet) -> ``analyze``.
"""

__version__ = "0.1.0"
