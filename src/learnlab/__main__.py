"""``python -m learnlab ...`` (and ``torchrun ... -m learnlab reproduce``) is the ``learnlab`` command."""

from learnlab.cli import main

raise SystemExit(main())
