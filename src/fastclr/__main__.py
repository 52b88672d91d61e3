import sys

from fastclr.cli import main

sys.exit(main())
