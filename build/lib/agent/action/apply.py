"""``apply(spec)`` (async) -> ``"applied"``.

Without a ``configuration_hash`` (the director's early "identity" apply) the spec is only saved. Otherwise
the applier installs jobs and packages (2013 flow, see agent/applier.py), monit is reloaded, and the spec is
saved to /var/vcap/bosh/spec.json with /var/vcap/instance/{id,name,deployment} beside it.
"""
from __future__ import annotations

from ..applier import ApplyError
from ..jobsupervisor import JobSupervisorError
from ..log import log
from ..spec import ApplySpec
from .base import Action, ActionError, Arg


class Apply(Action):
    name = "apply"
    args = (Arg("apply spec", dict),)

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self, spec: ApplySpec) -> str:
        svc = self.services
        if spec.get("configuration_hash"):
            try:
                await svc.applier.apply(spec)
            except (ApplyError, JobSupervisorError) as e:
                raise ActionError(f"Applying: {e}") from None
            svc.applier.write_instance_files(spec)
        else:
            log.info("Apply spec without configuration_hash: saving it only")
        svc.specs.save(spec)
        return "applied"
