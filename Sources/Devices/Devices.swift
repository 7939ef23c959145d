// The Devices layer.
