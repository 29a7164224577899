"""Entry point of the sampling service process (container ENTRYPOINT).

The servicer lives in the ctsynth library (ctsynth.servicers); this file only
starts it with the shared bootstrap: health, reflection, interceptors,
Prometheus metrics and graceful SIGTERM. Configuration: CTSYNTH_* variables.
"""

import sys

from ctsynth.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["serve", "sampling", *sys.argv[1:]]))
