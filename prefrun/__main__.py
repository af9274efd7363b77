"""`python -m prefrun` is the `prefrun` command."""

from prefrun.cli import main

main()
