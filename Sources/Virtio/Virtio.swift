// The Virtio layer.
