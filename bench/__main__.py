import sys

from bench.throughput import main

sys.exit(main())
