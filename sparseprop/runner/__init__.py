"""The one-run core: a run from config to records, its checkpoint reader and its figures."""
