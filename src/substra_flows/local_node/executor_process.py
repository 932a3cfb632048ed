"""Entry point of the executor child process (kept apart so ``-m`` does not re-run an imported module)."""

import sys
from multiprocessing.connection import Connection

from substra_flows.local_node.executor import _serve

if __name__ == "__main__":
    _serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
        sys.argv[3],
        sys.argv[4:],
    )
