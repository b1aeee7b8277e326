"""``python -m benchmarks.bench [accuracy|sweep] ...`` from the repository root (see the package docstring)."""
import sys

from . import main

sys.exit(main())
