"""`python -m cmbert ...`: the same command line as the `cmbert` console script."""

from cmbert.cli import main

main()
