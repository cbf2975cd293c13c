"""``bosh-lab``, the lab's CLI for people and scripts (``python -m cli``), and :mod:`cli.client`, the one
client of the director's HTTP API that the CLI, the end-to-end tests and bench/ use.

Modules: ``main`` (the parser and ``main``), ``commands`` (releases, deployments, tasks), ``commands_agent``
(verbs that reach one VM: disks, logs, ssh, agent-message), ``tasks`` (following a task), ``output`` (tables,
colour, event lines), ``errors`` (exit codes), ``client`` (the director client)."""
