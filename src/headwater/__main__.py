"""`python -m headwater`: the same command line as the `headwater` console script."""

from __future__ import annotations

from headwater.cli import main

if __name__ == "__main__":
    main()
