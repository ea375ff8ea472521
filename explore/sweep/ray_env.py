"""Keep AWS credentials out of Ray's runtime environments.

Ray Tune copies ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / session tokens from
the driver's environment into every trial actor's ``runtime_env`` (ray 2.60,
``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``), and Ray's runtime-env agent
writes that runtime_env in plain text to ``runtime_env_agent.log``. explore's trials
read S3 credentials the standard way instead — from the AWS chain of the node they
run on (instance profile, the environment of ``ray start``, ``~/.aws``); a local
cluster started by the driver inherits the driver's environment anyway.
"""

from __future__ import annotations

CREDENTIAL_VARS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"})


def keep_credentials_out_of_runtime_envs() -> None:
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(class_cache.ENV_VARS_TO_PROPAGATE) - CREDENTIAL_VARS  # type: ignore[assignment]
