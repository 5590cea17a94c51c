"""In-context learning: regression tasks, linear/softmax self-attention, GD baselines, studies."""
