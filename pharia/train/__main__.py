"""`python -m pharia.train ...`: the training command without the rest of the `pharia` CLI, so a
worker process imports only what training needs."""

from pharia.train.cli import main

main()
