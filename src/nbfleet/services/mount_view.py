"""The wire forms of a dynamic mount: ``DataVolumesRes`` and the ``NotebookResp.data_volumes`` item."""

from __future__ import annotations


def mount_json(row) -> dict:
    """``DataVolumesRes``."""
    return {
        "id": row["id"],
        "category": row["category"],
        "mount_path": row["mount_path"],
        "uri": row["uri"],
        "status": row["status"],
        "failure_reason": row["failure_reason"],
        "efs_id": row["efs_id"],
        "mount_type": "DYNAMIC",
    }


def volume_json(row) -> dict:
    """The mount as a ``NotebookResp.data_volumes`` item (``VolumeResponse``: ``url``, not ``uri``)."""
    return {
        "id": row["id"],
        "category": row["category"],
        "mount_path": row["mount_path"],
        "url": row["uri"],
        "uri": row["uri"],
        "status": row["status"],
        "failure_reason": row["failure_reason"],
        "efs_id": row["efs_id"],
        "mount_type": "DYNAMIC",
    }
