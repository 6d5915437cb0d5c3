"""Ray Jobs entrypoint for `sepcluster evaluate`.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env cluster/runtime_env.yaml -- python jobs/evaluate.py --config CONFIG.yaml

Also runs as `python jobs/evaluate.py ...` against a local Ray. Same flags as
`sepcluster evaluate --help`; this file only hands them to the library.
"""

import os
import sys

# the submitted working dir (or this checkout) provides the package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sepcluster.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
