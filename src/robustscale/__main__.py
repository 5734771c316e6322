import sys

from robustscale.cli import main

sys.exit(main())
