"""The few places patchray reads Ray's state beyond its stable user API, each behind one small function so
that a Ray upgrade breaks one named place (tested in ``tests/test_ray_compat.py``)."""
from __future__ import annotations

import json
import os

# Set by Ray's job supervisor in a submitted job's driver: the job's runtime_env and metadata, as JSON.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def job_runtime_env() -> dict | None:
    """The runtime_env of the ``ray job submit`` job this process is the driver of, or None outside one."""
    raw = os.environ.get(JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        return json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None


def placement_groups_of_other_jobs() -> list[tuple[str, dict[str, float]]]:
    """(job id, resources reserved) of every created placement group of a job other than this driver's: the
    training workers of other jobs on the cluster.

    Read from the GCS this driver is connected to (``placement_group_table``; no dashboard needed, and never
    another cluster on the same machine). A placement group's id ends with the id of the job that created it:
    Ray's id layout (``PlacementGroupID`` = unique bytes + ``JobID``), which has no public accessor.
    """
    import ray
    from ray.util import placement_group_table

    mine = ray.get_runtime_context().get_job_id()
    suffix = 2 * ray.JobID.size()  # hex digits of a job id
    held = []
    for group_id, group in placement_group_table().items():
        job = group_id[-suffix:]
        if group.get("state") != "CREATED" or job == mine:
            continue
        total: dict[str, float] = {}
        for bundle in (group.get("bundles") or {}).values():
            for key, value in bundle.items():
                total[key] = total.get(key, 0.0) + float(value)
        held.append((job, total))
    return held
