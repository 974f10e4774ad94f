"""Write a small sample of every file DataSource's data, matching its declared schema (see DATA.md).

python scripts/sample_data.py             # a few rows per file source, into the paths the specs name
python scripts/sample_data.py --describe  # the columns each source expects (DATA.md)
"""

import sys

from mlspec.scaffold.sample import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
