"""User response models: they decide the reward a simulated user gives an item."""
