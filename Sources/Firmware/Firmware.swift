// The Firmware layer.
