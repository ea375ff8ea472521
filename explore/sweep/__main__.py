"""``python -m explore.sweep NAME [overrides]`` / ``python -m explore.sweep --list``."""

from __future__ import annotations

import logging
import sys

from explore.config import ConfigError, list_spaces
from explore.store.uri import StorageError, redact


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("--list", "-l"):
        print("\n".join(list_spaces()))
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m explore.sweep NAME [key=value ...]   (--list: the search spaces)")
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="[explore] %(message)s", stream=sys.stdout)
    for noisy in ("ray", "ray.tune", "ray.train", "ray.data", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from omegaconf import OmegaConf

    from explore.config import compose, sweep_config
    from explore.sweep.driver import SweepFailedError, run
    from explore.sweep.ray_env import keep_credentials_out_of_runtime_envs

    keep_credentials_out_of_runtime_envs()

    try:
        composed = compose(argv[0], argv[1:])
        cfg = sweep_config(composed, argv[0])
        raw = OmegaConf.to_container(composed, resolve=True)
        uri = run(cfg, raw, overrides=argv[1:])  # type: ignore[arg-type]
    except (ConfigError, StorageError, ValueError, FileNotFoundError, SweepFailedError) as exc:
        print(f"error: {redact(str(exc).strip().splitlines()[0])}", file=sys.stderr)
        return 2
    print(f"results: {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
