"""The bosh-lab agent: runs inside every VM (stemcell container), talks to the director over NATS only."""

__version__ = "0.1.0"
