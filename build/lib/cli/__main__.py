"""``python -m cli``: the bosh-lab CLI."""
import sys

from cli.main import main

sys.exit(main())
