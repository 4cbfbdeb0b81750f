"""`python -m trainer.main [--config FILE] [key.sub=value ...]`: train, evaluate and export, from one config.

The command reads and checks the config, then hands it to `trainer.training`, which runs it. torch and Ignite are
imported only for a config that passed: a mistyped key or value is refused at once, not after seconds of imports.
"""

import argparse
import sys
from typing import Callable

from omegaconf import DictConfig

from trainer.config import DEFAULT_CONFIG, load_config
from trainer.errors import UserError, fail


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.main", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: configs/default.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_epochs=3 data.root=../shared/data")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, process: Callable[[int, DictConfig], None] | None = None) -> int:
    """Parse and check the config, then run `process` (by default `trainer.training.run_process`) in each process."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.overrides)
        from trainer.training import launch, run_process

        return launch(cfg, process or run_process)
    except UserError as exc:  # the config's, or where and how it cannot run (`launch_settings`)
        return fail(exc)
    except KeyboardInterrupt:  # Ctrl-C while torch and Ignite are still importing: said in a line, not a traceback
        return fail("stopped by the user before the training began", 130)


if __name__ == "__main__":
    sys.exit(main())
