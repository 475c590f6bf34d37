"""`python -m semhint`: the same as the `semhint` command."""

import sys

from semhint.app.cli import main

sys.exit(main())
