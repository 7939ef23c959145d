// The Boot layer.
