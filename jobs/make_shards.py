"""Make crop shards: `python jobs/make_shards.py {synthetic,mot,coco,folder,parse27k} --out DIR ...` (see --help)."""
import sys

from patchray.shards.cli import main

if __name__ == "__main__":
    sys.exit(main())
