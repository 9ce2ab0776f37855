"""The paper experiments, one module each; a module registers its experiment when imported (see `catalog.load`)."""
