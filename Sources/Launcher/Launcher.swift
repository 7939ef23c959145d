// The Launcher layer.
