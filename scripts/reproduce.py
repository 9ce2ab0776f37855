"""Run the paper's CPU-sized experiments, collect them, draw the figures and judge the claims (`make reproduce-figures`)."""

import sys

from sparseprop.cli.main import fail
from sparseprop.errors import SparsepropError
from sparseprop.paper.reproduce import main

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SparsepropError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        print("reproduce: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
