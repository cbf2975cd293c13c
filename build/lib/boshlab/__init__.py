"""Shared formats of bosh-lab: the NATS wire envelope, the DAV blobstore client, the release tarball
format, property merging and ERB rendering. Director, agent and tools import these; this package imports
neither the director nor the agent."""
