"""`python -m sparseprop.cli` runs the `sparseprop` command."""

from sparseprop.cli.main import main

main()
