"""``python -m corral_executor``: run the executor (see ``main.py``)."""

from corral_executor.main import main

raise SystemExit(main())
