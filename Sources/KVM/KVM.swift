// The KVM layer.
