"""What a data task runs, as a new data worker process runs it: the module it imports stays free of torch."""
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from helpers import jpeg_bytes

SCRIPT = r'''
import sys
import numpy as np
from patchray.data_tasks import read_and_decode

units = {"path": np.array([sys.argv[1]]), "row_group": np.array([0])}
blocks = list(read_and_decode(units, filesystem=None, columns=["image", "crop_id"], width=100, height=200))
print(sum(b.num_rows for b in blocks), blocks[0].column_names, "torch" in sys.modules, "torchvision" in sys.modules)
'''


def test_a_data_task_decodes_without_importing_torch(tmp_path):
    """torch and torchvision are most of a second of a new data worker's start and a few hundred MB of its
    memory: a task that only reads and decodes (the default, cut_on=worker) must not import them."""
    path = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"image": pa.array([jpeg_bytes()] * 3 + [b"not a jpeg"], pa.binary()),
                             "crop_id": list("abcd")}), path)
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[1])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["4", "['crop_id',", "'skip',", "'pixels']", "False", "False"]
