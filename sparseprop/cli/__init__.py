"""The `sparseprop` command: argument checks, the Hydra train app and the subcommands."""
