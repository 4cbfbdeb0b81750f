"""`python -m tests.tested_weights [overrides]`: the real trainer; each rank says which weights it tests at the end
(a digest of their bytes), right after the run has chosen them (`load_best_weights`)."""

import hashlib
import sys

import trainer.main
import trainer.training

choose = trainer.training.load_best_weights


def choose_and_say(model, best, key, take=True) -> int:
    epoch = choose(model, best, key, take)
    digest = hashlib.sha256()
    for tensor in trainer.training.unwrap(model).state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    # one write per line: the ranks share stderr, and print's separate write of the newline lets their lines run together
    sys.stderr.write(f"rank {trainer.training.idist.get_rank()} tests weights {digest.hexdigest()[:16]}\n")
    sys.stderr.flush()
    return epoch


def run_process(local_rank, cfg) -> None:
    trainer.training.load_best_weights = choose_and_say  # in each spawned process, where the run calls it
    trainer.training.run_process(local_rank, cfg)


if __name__ == "__main__":
    sys.exit(trainer.main.main(process=run_process))
