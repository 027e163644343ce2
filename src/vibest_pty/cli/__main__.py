"""`python -m vibest_pty.cli`: the `vibest-pty` command."""

from . import main

raise SystemExit(main())
