"""`python -m xmodal_bench` is the same as the `xmodal-bench` console script."""

from xmodal_bench.cli import main

raise SystemExit(main())
