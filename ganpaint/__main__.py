import sys

from ganpaint.apps.cli import main

sys.exit(main())
