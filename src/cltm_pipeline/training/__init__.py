"""Training: hyper-parameters, checkpoints, the one fit loop, a cell end to end, and the worker that runs many."""
