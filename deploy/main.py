"""Entry point of the Flex Template launcher (FLEX_TEMPLATE_PYTHON_PY_FILE in deploy/Dockerfile).

The launcher runs this file with the template's parameters as ``--name=value`` options plus the
Dataflow options it adds (runner, project, region, staging and temp locations, the SDK image).
Everything it runs lives in the installed ``tileseg`` package, so nothing the workers unpickle
refers to ``__main__`` and the launcher has nothing to build or install at launch.
"""

import sys

from common.cli import exit_now
from pipelines.segment import main

if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
