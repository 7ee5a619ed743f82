import sys

from rotviz.cli.main import main

sys.exit(main())
