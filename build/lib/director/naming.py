"""How BOSH names an instance in task logs and errors: one function, used everywhere."""
from __future__ import annotations


def instance_label(group: str, instance_id: str, index: int) -> str:
    """``redis/6f1c… (0)``: the group, the instance's id and its index, as BOSH prints them."""
    return f"{group}/{instance_id} ({index})"


def instance_path(group: str, instance_id: str) -> str:
    """``redis/6f1c…``: the instance as the bosh CLI's GROUP/ID addresses it (and the VM label holds)."""
    return f"{group}/{instance_id}"
