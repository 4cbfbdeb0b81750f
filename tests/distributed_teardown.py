"""`python -m tests.distributed_teardown [overrides]`: the real trainer; each rank then says how many DDP models
are still alive when Ignite goes on to destroy the process group (freeing one after that can abort the process)."""

import gc
import sys

import torch.nn.parallel

import trainer.main
import trainer.training


def run_process_then_count_ddp_models(local_rank, cfg) -> None:
    trainer.training.run_process(local_rank, cfg)
    alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
    print(f"rank {local_rank} left {alive} DDP models alive", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(trainer.main.main(process=run_process_then_count_ddp_models))
