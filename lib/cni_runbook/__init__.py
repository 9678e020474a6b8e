"""CNI runbooks for Kubespray clusters."""

__version__ = "0.1.0"
