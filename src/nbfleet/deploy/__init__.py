"""nbfleet itself on a Kubernetes cluster: the manifests ``nbfleet deploy render`` writes (docs/kubernetes.md)."""
