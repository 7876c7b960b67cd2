"""``python -m ofa_deploy``: the same CLI as ``ofa-deploy``."""

import sys

from ofa_deploy.cli.main import main

sys.exit(main())
