"""Stage 05: the CNI lifecycle - upgrade in place, or replacement by another CNI.

- :mod:`.compat`    version rules with their sources: CNI vs Kubernetes, skew between versions
- :mod:`.profiles`  per-CNI facts: version image, rollout order, NetworkPolicy, node leftovers
- :mod:`.installed` the installed CNI read from the cluster's objects (version, who made it)
- :mod:`.objdiff`   installed vs new rendering: added/changed/removed, upgrade order and steps
- :mod:`.upgrade`   the upgrade plan and its refusals
- :mod:`.replace`   the replacement plan, policies in force, Kubespray group_vars diff
- :mod:`.nodes`     node leftovers listed and cleaned over SSH (Ansible)
- :mod:`.apply`     the ordered apply, rollout waits, rollback to the recorded previous objects
- :mod:`.stage`     the stage wired to the params and the cluster
- :mod:`.views`     what the notebook shows and the result it records
"""
